#!/usr/bin/env python3
"""HF transformers peer for scripts/bench_extract.sh: per-layer last-token
extraction on the same texts, timed the same way (tokenisation + forward
passes, model load excluded).

Modes:
  convert  --gguf F --out DIR     dequantize a GGUF once into an HF directory
                                  (f32 safetensors + tokenizer.json) both sides load
  seed     --model DIR            the Concept Depth seed code's way: one text at a
                                  time, AutoModelForCausalLM(..., output_hidden_states=True)
  batched  --model DIR --batch-size N
                                  texts sorted by length, right-padded batches, the
                                  base model (no LM head), output_hidden_states=True,
                                  last real token gathered per layer

Prints one JSON line: {"mode", "batch_size", "texts", "tokens", "seconds", "tokens_per_s"}.
"""

import argparse
import json
import os
import sys
import time


def load_texts(path):
    with open(path) as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["convert", "seed", "batched"])
    ap.add_argument("--gguf")
    ap.add_argument("--model")
    ap.add_argument("--out")
    ap.add_argument("--input")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    args = ap.parse_args()

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    if args.mode == "convert":
        d, f = os.path.dirname(os.path.abspath(args.gguf)), os.path.basename(args.gguf)
        tok = transformers.AutoTokenizer.from_pretrained(d, gguf_file=f)
        model = transformers.AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        # save_pretrained refuses GGUF-loaded models; the weights are plain f32 now.
        from safetensors.torch import save_file

        os.makedirs(args.out, exist_ok=True)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
        model.config.save_pretrained(args.out)
        tok.save_pretrained(args.out)
        return 0

    texts = load_texts(args.input)
    tok = transformers.AutoTokenizer.from_pretrained(args.model)
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    causal = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).eval()
    n_tokens = 0
    start = time.perf_counter()
    with torch.inference_mode():
        if args.mode == "seed":
            for t in texts:
                ids = tok(t, return_tensors="pt")
                n_tokens += ids["input_ids"].shape[1]
                out = causal(**ids, output_hidden_states=True)
                _feats = torch.stack([h[0, -1] for h in out.hidden_states])
        else:
            base = causal.model
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
            tok.padding_side = "right"
            order = sorted(range(len(texts)), key=lambda i: -len(tok(texts[i])["input_ids"]))
            for s in range(0, len(order), args.batch_size):
                batch = [texts[i] for i in order[s : s + args.batch_size]]
                enc = tok(batch, return_tensors="pt", padding=True)
                lengths = enc["attention_mask"].sum(1)
                n_tokens += int(lengths.sum())
                out = base(**enc, output_hidden_states=True)
                rows = torch.arange(len(batch))
                _feats = torch.stack([h[rows, lengths - 1] for h in out.hidden_states], 1)
    secs = time.perf_counter() - start
    print(
        json.dumps(
            {
                "mode": f"hf-{args.mode}" + ("" if args.dtype == "f32" else f" {args.dtype}"),
                "batch_size": 1 if args.mode == "seed" else args.batch_size,
                "texts": len(texts),
                "tokens": n_tokens,
                "seconds": round(secs, 3),
                "tokens_per_s": round(n_tokens / secs, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
