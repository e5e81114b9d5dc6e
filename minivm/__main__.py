"""`python -m minivm` is the same as the `minivm` command."""
from minivm.cli import main

main()
