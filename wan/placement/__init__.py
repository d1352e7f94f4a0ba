"""Where each network lives: offload between device and host, the CPU text-encoder worker process."""
