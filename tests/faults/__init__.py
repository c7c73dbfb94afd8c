"""Faults injected for real: broken files, killed processes, a diverging Trainer, racing runs,
broken exports. One module per kind of fault; the README's "What happens when things go wrong"
names the test behind each behaviour."""
