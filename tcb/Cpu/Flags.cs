using System.Numerics;
using System.Runtime.CompilerServices;

namespace SecureVmm.Tcb.Cpu;

// Lazy arithmetic flags. The last flag-setting instruction stores its result and a carry-out
// vector (bit i = carry/borrow out of bit i), in the style of Bochs' lazy flags; the six status
// flags are derived only when read: CF = carry out of the top bit, OF = carry into the top bit
// XOR carry out of it, AF = carry out of bit 3 (Intel SDM vol. 1, 3.4.3.1). Instructions whose
// flags are not an add/sub carry chain (shifts, MUL, ...) synthesize the vector from the flag
// values they define, so one representation serves all.
public sealed partial class Cpu
{
    private uint _lfResult;
    private uint _lfCarries;
    private int _lfTop;      // index of the operand's sign bit: 7, 15 or 31
    private bool _lfLazy;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint SizeMask(int size) => size == 4 ? 0xFFFF_FFFFu : size == 2 ? 0xFFFFu : 0xFFu;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsAdd(uint a, uint b, uint r, int size)
    {
        r &= SizeMask(size);
        _lfResult = r;
        _lfCarries = AddCarries(a, b, r);
        _lfTop = size * 8 - 1;
        _lfLazy = true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsSub(uint a, uint b, uint r, int size)
    {
        r &= SizeMask(size);
        _lfResult = r;
        _lfCarries = SubCarries(a, b, r);
        _lfTop = size * 8 - 1;
        _lfLazy = true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsLogic(uint r, int size)
    {
        _lfResult = r & SizeMask(size);
        _lfCarries = 0;
        _lfTop = size * 8 - 1;
        _lfLazy = true;
    }

    /// <summary>Sets the lazy flags to a result and carry vector (top: the sign bit's index).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void SetLazyFlags(uint result, uint carries, int top)
    {
        _lfResult = result;
        _lfCarries = carries;
        _lfTop = top;
        _lfLazy = true;
    }

    /// <summary>Sets ZF/SF/PF from <paramref name="r"/> and CF/OF/AF as given.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsExplicit(uint r, int size, bool cf, bool of, bool af)
    {
        int top = size * 8 - 1;
        _lfResult = r & SizeMask(size);
        _lfCarries = ExplicitCarries(top, cf, of, af);
        _lfTop = top;
        _lfLazy = true;
    }

    /// <summary>INC/DEC: like ADD/SUB of 1 but CF is preserved (see <see cref="IncDecCarries"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsIncDec(uint a, uint r, int size, bool dec)
    {
        r &= SizeMask(size);
        int top = size * 8 - 1;
        _lfCarries = IncDecCarries(a, r, top, dec, GetCF());
        _lfResult = r;
        _lfTop = top;
        _lfLazy = true;
    }

    /// <summary>
    /// Rotates change only CF and OF (SDM vol. 2, RCL/RCR/ROL/ROR "Flags Affected"). With lazy
    /// flags pending, the top two bits of the carry vector are rewritten (as for INC/DEC) so that
    /// ZF/SF/PF/AF still derive from the earlier result; otherwise the stored EFLAGS bits change.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FlagsRotate(bool cf, bool of)
    {
        if (_lfLazy)
        {
            _lfCarries = RotateCarries(_lfCarries, _lfTop, cf, of);
            return;
        }
        _eflags = (_eflags & ~(EflagsBits.CF | EflagsBits.OF)) | (cf ? EflagsBits.CF : 0) | (of ? EflagsBits.OF : 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetCF() => _lfLazy ? LazyCF(_lfCarries, _lfTop) : (_eflags & EflagsBits.CF) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetZF() => _lfLazy ? _lfResult == 0 : (_eflags & EflagsBits.ZF) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetSF() => _lfLazy ? LazySF(_lfResult, _lfTop) : (_eflags & EflagsBits.SF) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetOF() => _lfLazy ? LazyOF(_lfCarries, _lfTop) : (_eflags & EflagsBits.OF) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetAF() => _lfLazy ? (_lfCarries & 8) != 0 : (_eflags & EflagsBits.AF) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool GetPF() => _lfLazy ? LazyPF(_lfResult) : (_eflags & EflagsBits.PF) != 0;

    /// <summary>Evaluates condition code <paramref name="cc"/> (0-15, the tttn encoding of SDM vol. 2, B.1.4.7).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal bool Condition(int cc)
    {
        // Only the flags the condition names are derived.
        bool r = (cc >> 1) switch
        {
            0 => GetOF(),
            1 => GetCF(),
            2 => GetZF(),
            3 => GetCF() || GetZF(),
            4 => GetSF(),
            5 => GetPF(),
            6 => GetSF() != GetOF(),
            _ => GetZF() || GetSF() != GetOF(),
        };
        return r ^ ((cc & 1) != 0);
    }

    // The lazy representation as pure functions of (result, carry vector, top bit). Translated
    // code (Translator.cs) keeps the three in locals and calls these or emits the same formulas.

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint AddCarries(uint a, uint b, uint r) => (a & b) | ((a | b) & ~r);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint SubCarries(uint a, uint b, uint r) => (~a & b) | (~(a ^ b) & r);

    /// <summary>A carry vector that reads as the given CF, OF and AF.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint ExplicitCarries(int top, bool cf, bool of, bool af)
    {
        uint c = cf ? 1u : 0u;
        uint o = of ? 1u : 0u;
        return (c << top) | ((c ^ o) << (top - 1)) | (af ? 8u : 0u);
    }

    /// <summary>
    /// INC/DEC: like ADD/SUB of 1 but CF is preserved (SDM vol. 2, INC/DEC "Flags Affected"). The
    /// carry vector of the add/sub is kept except its top two bits, which are rewritten so that
    /// bit top reads as the old CF and bit top XOR bit top-1 still reads as the new OF.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint IncDecCarries(uint a, uint r, int top, bool dec, bool oldCf)
    {
        uint carries = dec ? SubCarries(a, 1, r) : AddCarries(a, 1, r);
        uint of = ((carries >> top) ^ (carries >> (top - 1))) & 1;
        uint cf = oldCf ? 1u : 0u;
        return (carries & ~(3u << (top - 1))) | (cf << top) | ((cf ^ of) << (top - 1));
    }

    /// <summary>A rotate's CF and OF written into a pending carry vector (ZF/SF/PF/AF unchanged).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static uint RotateCarries(uint carries, int top, bool cf, bool of)
    {
        uint c = cf ? 1u : 0u;
        uint o = of ? 1u : 0u;
        return (carries & ~(3u << (top - 1))) | (c << top) | ((c ^ o) << (top - 1));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool LazyCF(uint carries, int top) => ((carries >> top) & 1) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool LazySF(uint result, int top) => ((result >> top) & 1) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool LazyOF(uint carries, int top) => (((carries >> top) ^ (carries >> (top - 1))) & 1) != 0;
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool LazyPF(uint result) => (BitOperations.PopCount(result & 0xFF) & 1) == 0;

    /// <summary>Materializes the lazy status flags into the stored EFLAGS image.</summary>
    private void SettleFlags()
    {
        if (!_lfLazy)
        {
            return;
        }
        uint f = _eflags & ~EflagsBits.Arithmetic;
        if (GetCF()) f |= EflagsBits.CF;
        if (GetPF()) f |= EflagsBits.PF;
        if (GetAF()) f |= EflagsBits.AF;
        if (GetZF()) f |= EflagsBits.ZF;
        if (GetSF()) f |= EflagsBits.SF;
        if (GetOF()) f |= EflagsBits.OF;
        _eflags = f;
        _lfLazy = false;
    }

    /// <summary>The full EFLAGS value. Setting it stores the value as is (callers apply the SDM's masks).</summary>
    public uint Eflags
    {
        get
        {
            SettleFlags();
            return _eflags;
        }
        set
        {
            _lfLazy = false;
            _eflags = (value & EflagsBits.Writable) | EflagsBits.Reserved1;
        }
    }

    /// <summary>Sets individual status flags (CF etc.) leaving the others.</summary>
    private void SetFlagBits(uint mask, bool on)
    {
        SettleFlags();
        _eflags = on ? _eflags | mask : _eflags & ~mask;
    }
}
