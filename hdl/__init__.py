"""Reusable Amaranth 0.5 cores (spike-accumulate array, neurons, attention datapaths, UART). Never imports torch."""
