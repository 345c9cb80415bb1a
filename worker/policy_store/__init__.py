"""Published policies in the artifact root, and hot reload of newer versions."""
