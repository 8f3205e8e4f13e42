"""Readers for pretrained weights published in other frameworks' formats."""
