"""The Zarr teacher-cache format: schema, resumable shard-aligned writing, fast reading, HDF5 export."""
