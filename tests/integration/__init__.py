"""Integration tier: the shipped small world's models loaded through the real APIs (diffusers,
open_clip, the zoo), training and unlearning runs, detectors on real models."""
