"""Released checkpoints (facebookresearch DiT ``.pt``, diffusers DiT folders, diffusers LDM text-to-image
pipeline folders) turned into diffcorrupt workdirs."""
