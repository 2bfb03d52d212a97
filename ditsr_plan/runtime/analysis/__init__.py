"""After a run: the report and compare, which read run folders only (no torch, nothing of ``train``)."""
