"""`python -m liverctl`: the command line without the console script (a Kaggle notebook's `!python -m liverctl`).

The guard: a process started by the spawn method imports the main module again, as `__mp_main__`.
"""

from liverctl.cli import main

if __name__ == "__main__":
    main(prog_name="liverctl")
