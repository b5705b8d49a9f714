"""Training and evaluation of FIANet.

Modules (imported directly, so ``import rrsis_geo.train`` stays light):
    losses      ``fianet_loss`` = 0.9·CE([0.9, 1.1]) + 0.1·summed Dice (docs/fianet.md
                §Training recipe)
    metrics     per-sample I/U, IoU, mIoU, oIoU, precision@0.5…0.9, gIoU, ``MetricAccumulator``
                (docs/fianet.md §Metrics)
    evaluation  ``evaluate_model``, ``evaluate_weights``, ``TextFeatureCache``, ``format_table``
    config      ``TrainSettings`` (validated settings, per-config defaults), ``TrainResult``
    optim       seeding, AdamW parameter groups, optimizer, poly learning-rate factor
    outputs     metrics.jsonl log, atomic summary / checkpoint writes, ``save_fianet_with_meta``
    loop        ``train(...)`` — the recipe of docs/fianet.md §Training recipe, selection on val
    starting    the starting model: new, ``--weights``, or pretrained Swin / BERT parts
"""
