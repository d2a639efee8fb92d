set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD MLFLOW_DISABLE_TELEMETRY=true MNIST_XAI_SERVER=0 PYTHONUNBUFFERED=1
nvidia-smi -L; lscpu | grep -E "Model name|Flags" | sed 's/Flags:.*\(avx512f\).*/Flags: ... avx512f .../' | head -2
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
python3 -m pytest -q -n 0 -p no:cacheprovider tests/attribution/test_oracles.py -k "smoothgrad_family" 2>&1 | tail -2
python3 bench/gpu/pipeline.py 2>&1 | tee $OUT/pipeline.txt || exit 1
timeout 300 python3 bench/attribution.py --device cuda --rounds 1 --repeats 3 --model /tmp/gpu_model.pt 2>&1 | tee $OUT/bench.txt
cp bench/results/attribution.json $OUT/ 2>/dev/null
