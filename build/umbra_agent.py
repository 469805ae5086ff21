"""The one-file agent's entry point (PyInstaller runs this file; see umbra-agent.spec)."""

import sys

if sys.argv[1:] == ["--version"]:
    # Answered before the CLI's imports (a third of a second): deployment tools call this often.
    # The line is the one argparse prints for `umbra-agent --version` (tests/build compare them).
    from agent import __version__

    print(f"umbra-agent {__version__}")
    sys.exit(0)

from agent.cli.main import main  # noqa: E402

sys.exit(main())
