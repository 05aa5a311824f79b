"""Mapping the integer IR onto the overlay: the program of layer descriptors with its weight and parameter
images (:mod:`.program`), the overlay configuration a board gets and its pre-synthesis estimate
(:mod:`.overlay_config`), and how the ECP5 builds a memory (:mod:`.estimate`)."""
