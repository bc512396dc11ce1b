"""The audit: `python -m audit` traces each question and regenerates README.md's tables."""
