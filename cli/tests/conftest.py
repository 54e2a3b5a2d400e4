import sys
from pathlib import Path

# `cli_dummies` must import alike here and in the supervisor processes the CLI tests start.
sys.path.insert(0, str(Path(__file__).parent))
