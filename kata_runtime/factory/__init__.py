"""Where a sandbox's VM comes from, when not from a cold boot of its own: the VM template
(``template.py``: clones of one saved VM) and the VM cache (``cache.py``: VMs booted ahead by a
daemon). ``ready.py`` waits for a VM's agent, whichever way the VM was made."""
