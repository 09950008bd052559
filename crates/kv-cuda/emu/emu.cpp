// Runs one launch of a kv-cuda kernel in the emulation of emu.h: reads a job folder (job.txt:
// kernel grid block shared_bytes output_bytes; params.bin, tab.bin, src.bin) and writes
// dst.bin (poisoned with 0xCD before the launch, with a guard zone checked after) and
// status.txt (the fault word). Built and driven by kv-codec's `cuda_emulate` example.
#include "emu.h"
#include <string>
#include <fstream>
#include <sstream>
extern "C" { unsigned smem[1 << 16]; }
#include "kernels_gen.cu"

namespace emu {
unsigned cur;
dim3 block_idx, block_dim;
uint64_t slots[1024];
static ucontext_t sched;
static std::vector<ucontext_t> ctx;
static std::vector<int> state;  // 0 runnable, 1 at block barrier, 2 done, 3 at warp barrier
static std::vector<std::vector<char>> stacks;
typedef void (*Kern)(const Params, const void*, void*, const u32*, u64*);
static Kern kern;
static Params P;
static const void* src;
static void* dst;
static const u32* tab;
static u64* status;
static unsigned long long barriers;
void barrier() { state[cur] = 1; barriers++; swapcontext(&ctx[cur], &sched); }
void warp_barrier() { state[cur] = 3; barriers++; swapcontext(&ctx[cur], &sched); }
static void trampoline(int i) { kern(P, src, dst, tab, status); state[i] = 2; }
static void run_block(unsigned n) {
    ctx.assign(n, ucontext_t{});
    state.assign(n, 0);
    stacks.resize(n);
    for (unsigned i = 0; i < n; ++i) {
        stacks[i].resize(1 << 18);
        getcontext(&ctx[i]);
        ctx[i].uc_stack.ss_sp = stacks[i].data();
        ctx[i].uc_stack.ss_size = stacks[i].size();
        ctx[i].uc_link = &sched;
        makecontext(&ctx[i], (void (*)())trampoline, 1, (int)i);
    }
    for (;;) {
        for (unsigned i = 0; i < n; ++i) {
            if (state[i] != 0) continue;
            cur = i;
            swapcontext(&sched, &ctx[i]);
        }
        unsigned done = 0, block = 0;
        for (unsigned i = 0; i < n; ++i) { done += state[i] == 2; block += state[i] == 1; }
        if (done == n) return;
        bool released = false;
        // A warp whose 32 threads all wait at a warp barrier goes on.
        for (unsigned w = 0; w < n / 32; ++w) {
            unsigned at = 0, other = 0;
            for (unsigned i = 32 * w; i < 32 * w + 32; ++i) { at += state[i] == 3; other += state[i] != 3; }
            if (at == 32) { for (unsigned i = 32 * w; i < 32 * w + 32; ++i) state[i] = 0; released = true; }
            else if (at != 0 && other != 0) {
                bool stuck = true;  // others may still be running toward the barrier
                for (unsigned i = 32 * w; i < 32 * w + 32; ++i) if (state[i] == 0) stuck = false;
                if (stuck) { fprintf(stderr, "emu: divergent warp barrier in block %u warp %u\n", block_idx.x, w); exit(3); }
            }
        }
        if (!released && block == n) { for (unsigned i = 0; i < n; ++i) state[i] = 0; released = true; }
        if (!released) {
            bool any_runnable = false;
            for (unsigned i = 0; i < n; ++i) any_runnable |= state[i] == 0;
            if (!any_runnable) { fprintf(stderr, "emu: deadlock or divergent barrier in block %u (%u done, %u at block barrier)\n", block_idx.x, done, block); exit(3); }
        }
    }
}
}

static std::vector<char> slurp(const std::string& p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) { fprintf(stderr, "emu: cannot read %s\n", p.c_str()); exit(2); }
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

int main(int argc, char** argv) {
    std::string dir = argv[1];
    std::ifstream job(dir + "/job.txt");
    std::string kernel; unsigned grid, block, shbytes; unsigned long long dst_bytes;
    job >> kernel >> grid >> block >> shbytes >> dst_bytes;
    struct { const char* name; emu::Kern f; } table[] = {
        {"kvc_voronoi_encode", kvc_voronoi_encode}, {"kvc_voronoi_decode", kvc_voronoi_decode},
        {"kvc_turboquant_encode", kvc_turboquant_encode}, {"kvc_turboquant_decode", kvc_turboquant_decode},
        {"kvc_scalar_encode", kvc_scalar_encode}, {"kvc_scalar_decode", kvc_scalar_decode},
        {"kvc_compat_encode", kvc_compat_encode}, {"kvc_compat_decode", kvc_compat_decode},
    };
    emu::kern = nullptr;
    for (auto& t : table) if (kernel == t.name) emu::kern = t.f;
    if (!emu::kern) { fprintf(stderr, "emu: unknown kernel %s\n", kernel.c_str()); return 2; }
    auto params = slurp(dir + "/params.bin");
    if (params.size() != sizeof(Params)) { fprintf(stderr, "emu: params size %zu vs %zu\n", params.size(), sizeof(Params)); return 2; }
    memcpy(&emu::P, params.data(), sizeof(Params));
    auto tab = slurp(dir + "/tab.bin");
    auto src = slurp(dir + "/src.bin");
    std::vector<char> dst(dst_bytes + 64, (char)0xCD);  // poison, with a guard zone
    unsigned long long status = ~0ull;
    emu::src = src.data(); emu::dst = dst.data(); emu::tab = (const u32*)tab.data(); emu::status = &status;
    emu::block_dim = dim3{block, 1, 1};
    if (shbytes > sizeof(smem)) { fprintf(stderr, "emu: smem too large\n"); return 2; }
    for (unsigned b = 0; b < grid; ++b) {
        emu::block_idx = dim3{b, 0, 0};
        memset(smem, 0xA5, sizeof(smem));
        emu::run_block(block);
    }
    for (size_t i = dst_bytes; i < dst.size(); ++i) if ((unsigned char)dst[i] != 0xCD) { fprintf(stderr, "emu: write past the end at %zu\n", i); return 4; }
    std::ofstream(dir + "/dst.bin", std::ios::binary).write(dst.data(), dst_bytes);
    std::ofstream(dir + "/status.txt") << status << "\n";
    fprintf(stderr, "emu: %s grid %u barriers %llu\n", kernel.c_str(), grid, emu::barriers);
    return 0;
}
