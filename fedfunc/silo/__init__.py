"""The silo side: the job runner every silo job runs (locally and on AML), its storage and its home."""
