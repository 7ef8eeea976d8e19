"""The six component families: readers, backbones, heads, optimizers, lr schedulers, savers."""
