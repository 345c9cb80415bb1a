"""Torch building blocks; TorchModelBlock adapts any dict-in dict-out net to single and batched inputs."""
