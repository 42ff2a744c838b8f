"""One evaluation run: its settings, the per-post evaluation, batching, and the pytest plugin around it."""
