"""Thin Typer commands, one module per area. Each module exposes `register(app)`.

Commands parse options, call one library function, print one summary, and map `LiverctlError` to an exit
code (see `_common.guarded`). Heavy imports (torch, zarr, smp) happen inside command bodies so that
`liverctl --help` and `liverctl watch` start instantly.
"""
