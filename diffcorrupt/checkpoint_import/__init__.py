"""Released checkpoints (facebookresearch DiT ``.pt``, diffusers DiT folders) turned into diffcorrupt workdirs."""
