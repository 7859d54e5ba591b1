"""train.py's model build and optimizer step, for the training benches (bench_train.py on a run's
checkpoint, bench_scale.py at real scale on random fbank): one copy, so both time the same step."""


def build_for_training(params, device):
    """train.py's model (random weights: `recipe.get_model(params, load_pretrained=False)`, so an
    RWKV-7 comes from params.rwkv_config), moved to `device` in train mode, its optimizers and grad
    scaler. Returns (model, tokenizers, optimizer, scaler)."""
    from zipformer_rwkv import recipe
    from zipformer_rwkv.utils import create_grad_scaler

    model, tokenizers = recipe.get_model(params, load_pretrained=False)
    model.to(device).train()
    optimizer = recipe.get_optimizer(params, model)
    scaler = create_grad_scaler(device, enabled=params.use_fp16, init_scale=1.0)
    return model, tokenizers, optimizer, scaler


def training_step(params, model, optimizer, scaler, batch: dict, tokenizers, device, step: int) -> float:
    """One train.py optimizer step on `batch` (autocast per params.use_autocast/params.dtype, grad
    scaler, scheduler at batch `step`); returns the batch's audio seconds (lm: tokens)."""
    from zipformer_rwkv import recipe, train
    from zipformer_rwkv.utils import torch_autocast

    with torch_autocast(device, enabled=params.use_autocast, dtype=params.dtype):
        loss, _ = recipe.compute_loss(params, model, batch, tokenizers, device)
    scaler.scale(loss).backward()
    optimizer.scheduler.step_batch(step)
    optimizer.step(scaler)
    scaler.update()
    optimizer.zero_grad()
    return train.batch_audio_seconds(params, batch)
