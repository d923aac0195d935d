"""Golden fixtures for the lowrank-mp and sparse-lowbit delta files: the format read again, independently, in PyTorch.

The delta files in tests/fixtures/codecs/NAME/*.safetensors are written by `bitdelta compress` from the tiny models
(tools/oracle/codec_fixtures.sh says how). This script decodes every compressed linear of each file by the format's
spec alone (the doc comments of src/Models/DeltaFile.cs, src/Kernels/LowRankLinear.cs, SparseLinear.cs and
PackedCodes.cs, written anew here; no C# code is run), and writes NAME/FILE.goldens.safetensors next to it:
    probe.<in>   F32 [4, in]    a fixed random probe per input width (seed 11 + in)
    X.y          F32 [4, out]   probe · Δᵀ for the Δ the file encodes (f64, rounded once)
    X.err        F32 [1]        ‖Δ_file − (W_ft − W_base)‖ / ‖W_ft − W_base‖ (f64)
    X.best       F32 [1]        the best any file of the codec's shape could do, unquantized:
                                lowrank-mp: the best rank-R approximation (torch.linalg.svd), R the file's rank;
                                sparse-lowbit: 2:4 magnitude pruning with the kept values exact
The C# tests (tests/Models/CodecOracleTests.cs) check their decoding, the kernels on every test device, and the
compressor's error against these.

Run on the GPU machine from the repository root (CPU torch is enough):
    python3 tools/oracle/codec_golden.py --out $OUT/codecs
then copy $OUT/codecs/NAME/*.goldens.safetensors into tests/fixtures/codecs/NAME/.
"""
import argparse, json, os, struct, sys
import torch
from safetensors.torch import save_file, load_file

DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2), "U8": (torch.uint8, 1),
          "U32": (torch.int32, 4), "I32": (torch.int32, 4)}


def read_safetensors(path):
    """(header metadata, name → (dtype name, shape, raw bytes)), parsed by the safetensors spec: an 8-byte little-endian
    header length, a JSON header, then the data."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n:]
    return meta, {k: (v["dtype"], v["shape"], data[v["data_offsets"][0]:v["data_offsets"][1]]) for k, v in header.items()}


class NoZstd(Exception):
    pass


def zstd_decompress(blob, path, name):
    try:
        from compression import zstd   # Python 3.14
        return zstd.decompress(blob)
    except ImportError:
        pass
    try:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(blob)
    except ImportError:
        raise NoZstd(f"{path}: tensor '{name}' is zstd-packed and this Python has neither compression.zstd nor zstandard")


def tensor(meta, entries, name, path):
    """A tensor as the file's reader sees it: zstd-packed ones (metadata `zstd`: name → dtype and shape) unpacked."""
    dt, shape, blob = entries[name]
    packed = json.loads(meta.get("zstd", "{}"))
    if name in packed:
        blob = zstd_decompress(blob, path, name)
        dt, shape = packed[name]["dtype"], packed[name]["shape"]
    tdt, size = DTYPES[dt]
    t = torch.frombuffer(bytearray(blob), dtype=tdt).reshape(shape) if blob else torch.zeros(shape, dtype=tdt)
    if dt == "U32":
        t = t.to(torch.int64) & 0xFFFFFFFF
    return t


def unpack(words, count, bits):
    """Codes 0 … count of a row packed at `bits` (PackedCodes: code j at bits j·b … j·b + b − 1 from the row's first word,
    least significant first, possibly straddling two words). words: int64 [rows, W] of u32 values."""
    rows = words.shape[0]
    bitplane = (words[:, :, None] >> torch.arange(32)) & 1          # [rows, W, 32], bit k of word w
    stream = bitplane.reshape(rows, -1)                              # bit i of the row at column i
    idx = torch.arange(count)[:, None] * bits + torch.arange(bits)   # [count, bits]
    return (stream[:, idx] << torch.arange(bits)).sum(-1)            # [rows, count]


def row_words(count, bits):
    return (count * bits + 31) // 32


def lowrank_delta(meta, entries, path, stem, out_dim, in_dim, slices, group):
    """Δ = Σ_s U_s·diag(σ_s)·V_sᵀ, factors dequantized as scale·(code − zero), per group of `group` along each row."""
    t = lambda s: tensor(meta, entries, stem + s, path)
    vq, vs, vz, uq, us, uz, sigma = t(".lr.vq"), t(".lr.vs"), t(".lr.vz"), t(".lr.uq"), t(".lr.us"), t(".lr.uz"), t(".lr.sigma")
    v_groups = -(-in_dim // group)
    vs, vz = vs.double().reshape(-1, v_groups), vz.double().reshape(-1, v_groups)
    vw = uw = up = row = 0
    delta = torch.zeros(out_dim, in_dim, dtype=torch.float64)
    for rank, bits in slices:
        if rank == 0:
            continue
        n = rank * row_words(in_dim, bits)
        codes = unpack(vq[vw:vw + n].reshape(rank, -1), in_dim, bits).double()
        g = torch.arange(in_dim) // group
        v = vs[row:row + rank][:, g] * (codes - vz[row:row + rank][:, g])                 # [rank, in]
        vw += n
        n = out_dim * row_words(rank, bits)
        codes = unpack(uq[uw:uw + n].reshape(out_dim, -1), rank, bits).double()
        u_groups = -(-rank // group)
        s = us[up:up + out_dim * u_groups].double().reshape(out_dim, u_groups)
        z = uz[up:up + out_dim * u_groups].double().reshape(out_dim, u_groups)
        g = torch.arange(rank) // group
        u = s[:, g] * (codes - z[:, g])                                                    # [out, rank]
        uw += n
        up += out_dim * u_groups
        delta += u @ torch.diag(sigma[row:row + rank].double()) @ v
        row += rank
    assert vw == vq.numel() and uw == uq.numel() and row == sigma.numel(), f"{path}: {stem}: sizes do not add up"
    return delta


def sparse_delta(meta, entries, path, stem, out_dim, in_dim, bits, group):
    """2:4: for inputs 4q … 4q + 3, nibble q mod 8 of meta word q div 8 holds kept positions a (low 2 bits) < b (high 2);
    codes 2q and 2q + 1 of the row are their values, scale·(code − 2^(b−1)), the scale of the value's group of inputs."""
    meta_w, q, s = (tensor(meta, entries, stem + x, path) for x in (".sp.meta", ".sp.q", ".sp.s"))
    fours = in_dim // 4
    nib = (meta_w[:, torch.arange(fours) // 8] >> (4 * (torch.arange(fours) % 8))) & 15   # [out, fours]
    a, b = nib & 3, nib >> 2
    codes = unpack(q, 2 * fours, bits).double().reshape(out_dim, fours, 2)
    zero = 2 ** (bits - 1)
    scales = s.double().reshape(out_dim, -1)
    delta = torch.zeros(out_dim, in_dim, dtype=torch.float64)
    rows = torch.arange(out_dim)[:, None]
    for k, pos in ((0, a), (1, b)):
        col = 4 * torch.arange(fours)[None, :] + pos
        delta[rows, col] = scales[rows, col // group] * (codes[:, :, k] - zero)
    return delta


def best_lowrank(d, rank):
    sv = torch.linalg.svdvals(d)
    return (sv[rank:].square().sum() / sv.square().sum()).sqrt().item()


def best_sparse(d):
    out_dim, in_dim = d.shape
    g = d.reshape(out_dim, in_dim // 4, 4)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, g.abs().topk(2, dim=-1).indices, True)
    return ((g * ~keep).norm() / d.norm()).item()


def make(name, fixtures, models, tunes, out):
    folder = os.path.join(fixtures, name)
    base = load_file(os.path.join(models, name, "model.safetensors"))
    ft = load_file(os.path.join(tunes, name, "model.safetensors"))
    os.makedirs(os.path.join(out, name), exist_ok=True)
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and not f.endswith(".goldens.safetensors")):
        path = os.path.join(folder, file)
        try:
            make_file(name, file, path, base, ft, out)
        except NoZstd as e:
            print(f"skipped: {e}")


def make_file(name, file, path, base, ft, out):
    meta, entries = read_safetensors(path)
    codec, params = meta["codec"], json.loads(meta.get("codec_params", "{}"))
    goldens, probes = {}, {}
    for weight, (out_dim, in_dim) in json.loads(meta["compressed"]).items():
        stem = weight[: -len(".weight")]
        if codec == "lowrank-mp":
            slices = params["slices"][weight]
            d = lowrank_delta(meta, entries, path, stem, out_dim, in_dim, slices, params["group"])
        elif codec == "sparse-lowbit":
            d = sparse_delta(meta, entries, path, stem, out_dim, in_dim, params["bits"], params["group"])
        else:
            sys.exit(f"{path}: codec '{codec}' is not one this oracle reads")
        if in_dim not in probes:
            # f32 values (what the file stores and the C# side reads), multiplied in f64.
            probes[in_dim] = torch.randn(4, in_dim, generator=torch.Generator().manual_seed(11 + in_dim)).double()
        want = ft[weight].double() - base[weight].double()
        err = ((d - want).norm() / want.norm()).item()
        best = best_lowrank(want, sum(r for r, _ in slices)) if codec == "lowrank-mp" else best_sparse(want)
        goldens[f"{weight}.y"] = (probes[in_dim] @ d.T).float()
        goldens[f"{weight}.err"] = torch.tensor([err], dtype=torch.float32)
        goldens[f"{weight}.best"] = torch.tensor([best], dtype=torch.float32)
        print(f"{name}/{file} {weight}: err {err:.5f}, best {best:.5f}")
    for in_dim, p in probes.items():
        goldens[f"probe.{in_dim}"] = p.float()
    save_file(goldens, os.path.join(out, name, file.replace(".safetensors", ".goldens.safetensors")), metadata={
        "torch": torch.__version__, "python": sys.version.split()[0], "source": f"tests/fixtures/codecs/{name}/{file}"})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--fixtures", default="tests/fixtures/codecs")
    ap.add_argument("--models", default="tests/fixtures/models")
    ap.add_argument("--tunes", default="tests/fixtures/bitdelta")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")
    for name in sorted(os.listdir(args.fixtures)):
        if os.path.isdir(os.path.join(args.fixtures, name)):
            make(name, args.fixtures, args.models, args.tunes, args.out)


if __name__ == "__main__":
    main()
