"""End-to-end pipelines built from the stages: the quickstart and its report."""
