"""Solvers and I/O helpers. Kept empty so that importing one submodule stays light."""
