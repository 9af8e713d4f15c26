namespace SecureVmm.Tcb.Cpu;

/// <summary>
/// The fixed CPUID model (Intel SDM vol. 2, CPUID): a family-6 model-3 stepping-3 "GenuineIntel"
/// processor (Pentium II class) whose feature bits are exactly what this CPU implements. Nothing
/// of the host processor is visible. Documented in docs/cpu.md.
/// </summary>
public static class CpuidModel
{
    /// <summary>Processor signature (leaf 1 EAX, and EDX after RESET): family 6, model 3, stepping 3.</summary>
    public const uint Signature = 0x0000_0633;

    // Leaf 1 EDX feature bits (SDM vol. 2, table 3-11).
    public const uint FeatureFpu = 1u << 0;
    public const uint FeaturePse = 1u << 3;
    public const uint FeatureTsc = 1u << 4;
    public const uint FeatureMsr = 1u << 5;
    public const uint FeatureCx8 = 1u << 8;
    public const uint FeatureSep = 1u << 11;
    public const uint FeaturePge = 1u << 13;
    public const uint FeatureCmov = 1u << 15;

    /// <summary>Leaf 1 EDX without the FPU bit; FPU is added only when the x87 unit is wired in.</summary>
    public const uint BaseFeatures = FeaturePse | FeatureTsc | FeatureMsr | FeatureCx8 | FeatureSep | FeaturePge | FeatureCmov;

    public const uint MaxBasicLeaf = 2;
    public const uint MaxExtendedLeaf = 0x8000_0004;

    private const string Brand = "SecureVmm virtual i686 CPU";

    public static void Query(uint leaf, uint subleaf, bool fpu, out uint eax, out uint ebx, out uint ecx, out uint edx)
    {
        _ = subleaf;
        eax = ebx = ecx = edx = 0;
        // Leaves above the maximum return the highest basic leaf's values on Intel parts
        // (SDM vol. 2, CPUID "If a value entered ... is higher than the maximum"): use leaf 2.
        if (leaf > MaxBasicLeaf && leaf < 0x8000_0000)
        {
            leaf = MaxBasicLeaf;
        }
        else if (leaf > MaxExtendedLeaf)
        {
            leaf = MaxBasicLeaf;
        }
        switch (leaf)
        {
            case 0:
                eax = MaxBasicLeaf;
                ebx = 0x756E_6547; // "Genu"
                edx = 0x4965_6E69; // "ineI"
                ecx = 0x6C65_746E; // "ntel"
                break;
            case 1:
                eax = Signature;
                edx = BaseFeatures | (fpu ? FeatureFpu : 0);
                break;
            case 2:
                // One iteration, no cache/TLB descriptors (all zero bytes = null descriptors).
                eax = 0x0000_0001;
                break;
            case 0x8000_0000:
                eax = MaxExtendedLeaf;
                break;
            case 0x8000_0001:
                break;
            default:
            {
                // 0x80000002-4: brand string, 16 bytes per leaf, NUL padded.
                int start = (int)(leaf - 0x8000_0002) * 16;
                Span<uint> regs = stackalloc uint[4];
                for (int i = 0; i < 16; i++)
                {
                    int idx = start + i;
                    uint ch = idx < Brand.Length ? Brand[idx] : 0u;
                    regs[i / 4] |= ch << (8 * (i % 4));
                }
                eax = regs[0]; ebx = regs[1]; ecx = regs[2]; edx = regs[3];
                break;
            }
        }
    }
}
