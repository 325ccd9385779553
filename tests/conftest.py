import sys
from pathlib import Path

# tests import helpers such as memnet from this folder
sys.path.insert(0, str(Path(__file__).parent))
