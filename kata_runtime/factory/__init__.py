"""VM templates: boot a VM once, save it, start new sandboxes as copy-on-write clones of it."""
