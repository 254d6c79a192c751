"""The `waops lab` and `waops demo` commands, registered with `waops` through entry points."""
