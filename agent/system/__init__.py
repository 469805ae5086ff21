"""The raw readers of the OS that the sensors call: /proc, NVML, the kernel's exec events, and
hashing within budgets."""
