"""What runs at submit time: grids, the submission plan, lint, status, fetching results."""
