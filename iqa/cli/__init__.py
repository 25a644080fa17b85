"""The command line: `score`/`filter` (`main`), the shared options, and one module per other command."""
