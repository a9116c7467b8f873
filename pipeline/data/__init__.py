"""Data sets and the image store: sources (synthetic, Stanford 40, image folders, HDF5) decoded once into Zarr."""
