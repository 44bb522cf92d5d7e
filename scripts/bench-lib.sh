# Shared by the benchmark scripts (sourced, not run): the standard synthetic model and the wait
# for a server to become ready.

# synthetic_model PATH [SEED] [VOCAB]: makes the random-weight 24x896 Q4_K_M model of realistic
# shape (llama architecture, 14 heads, 2 KV heads, FFN 4864, stories260K's tokenizer) at PATH
# unless it is there. VOCAB 0 (default) keeps that tokenizer's 512 tokens (~359M parameters);
# otherwise the vocabulary is padded to VOCAB unused tokens and the output tied to the embeddings,
# as in Qwen2.5-0.5B (151936: ~494M parameters). Needs $models (the test models) and $synth_tool
# (build/tools/make-synthetic-gguf).
synthetic_model() {
  local out=$1 seed=${2:-1} vocab=${3:-0}
  [ -f "$out" ] && return 0
  [ -x "$synth_tool" ] || { echo "make-synthetic-gguf not found at $synth_tool: build the project first" >&2; return 1; }
  mkdir -p "$(dirname "$out")"
  local extra=()
  [ "$vocab" -gt 0 ] && extra=(--vocab-size "$vocab" --tie-embeddings)
  echo "generating $out (24 layers x 896, Q4_K_M, random weights, seed $seed, vocab ${vocab/#0/512})" >&2
  "$synth_tool" --out "$out.tmp" --vocab-from "$models/stories260K.gguf" --layers 24 --embd 896 \
    --heads 14 --kv-heads 2 --ffn 4864 --ctx 4096 --seed "$seed" --type q4_k_m "${extra[@]}" >&2
  mv "$out.tmp" "$out"
}

# free_port: prints a loopback TCP port nothing listens on (a random one in 20000-39999), or
# fails after 200 tries.
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# wait_ready URL PID LOG: polls URL/v1/health/ready (inferbox; llama-server has no such route and
# answers 404 there, so then its /health) for up to 120 s; on failure, or when PID exits first,
# prints LOG and returns 1.
wait_ready() {
  local url=$1 pid=$2 logf=$3 code
  for _ in $(seq 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/health/ready" || true)
    [ "$code" = 200 ] && return 0
    [ "$code" = 404 ] && curl -sf "$url/health" >/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  cat "$logf" >&2
  return 1
}
