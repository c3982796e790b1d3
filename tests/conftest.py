import os
import sys

# tests/naive.py holds the independent float64 formulas shared by the test files.
sys.path.insert(0, os.path.dirname(__file__))
