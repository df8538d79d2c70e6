"""Offline work on images: the loss terms (losses) and the task table of thesis weights (tasks), segmentation masks
(masks), the VGG19 and InceptionV3 feature networks, optimisation NST (nst, nst_job), metrics and the one paired
scorer (metrics, evaluate, temporal), dataset layouts (datasets), batch stylization (stylize), screenshot cleaning
(screenshot). Files are read and written through usnst_io.media."""
