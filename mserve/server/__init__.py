"""The model server: serves every version in a repository over KServe V2 and TF Serving REST."""
