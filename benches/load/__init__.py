"""End-to-end load benchmark (issue 8): ``python -m benches.load --profile quick|full``."""
