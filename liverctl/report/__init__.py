"""The HTML/PNG report of one or more runs."""
