"""The digital twin: a simulated cluster and job, the files each simulated node exposes, fake NVML, `c4 sim` and `c4 demo`."""
