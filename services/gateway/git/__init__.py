"""git push and build sources: smart HTTP, the pre-receive hook, pushes, builds and their output."""
