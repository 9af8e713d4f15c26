using Iced.Intel;

namespace SecureVmm.Tcb.Cpu;

// String instructions with REP/REPE/REPNE and 16- or 32-bit addressing (SDM vol. 1, 7.3.9;
// vol. 2 MOVS/CMPS/SCAS/LODS/STOS/INS/OUTS and REP). The source is seg:(E)SI (segment
// overridable), the destination always ES:(E)DI. A REP instruction runs in chunks bounded by the
// remaining instruction budget: the registers record the progress and EIP stays on the
// instruction until (E)CX reaches 0, which is also how a fault or interrupt in the middle of a
// REP resumes correctly (SDM vol. 2, REP: "interrupted ... resumes").
public sealed partial class Cpu
{
    private const byte StrMovs = 0, StrCmps = 1, StrScas = 2, StrLods = 3, StrStos = 4, StrIns = 5, StrOuts = 6;

    private static void RegisterStrings()
    {
        foreach (var (m, op) in new[]
        {
            (Mnemonic.Movsb, StrMovs), (Mnemonic.Movsw, StrMovs), (Mnemonic.Movsd, StrMovs),
            (Mnemonic.Cmpsb, StrCmps), (Mnemonic.Cmpsw, StrCmps), (Mnemonic.Cmpsd, StrCmps),
            (Mnemonic.Scasb, StrScas), (Mnemonic.Scasw, StrScas), (Mnemonic.Scasd, StrScas),
            (Mnemonic.Lodsb, StrLods), (Mnemonic.Lodsw, StrLods), (Mnemonic.Lodsd, StrLods),
            (Mnemonic.Stosb, StrStos), (Mnemonic.Stosw, StrStos), (Mnemonic.Stosd, StrStos),
            (Mnemonic.Insb, StrIns), (Mnemonic.Insw, StrIns), (Mnemonic.Insd, StrIns),
            (Mnemonic.Outsb, StrOuts), (Mnemonic.Outsw, StrOuts), (Mnemonic.Outsd, StrOuts),
        })
        {
            foreach (var code in s_codesByMnemonic.Value[(int)m])
            {
                // Movsd/Cmpsd also name SSE2 forms: those reach the handler as non-string
                // instructions and raise #UD (no SSE in this model).
                s_stringOp[(int)code] = op;
                On(code, (c, ref d) => StringInstruction(c, ref d), 0);
            }
        }
    }

    private static readonly byte[] s_stringOp = new byte[CodeCount];

    private static void StringInstruction(Cpu c, ref DecodedInsn d)
    {
        if (!d.I.IsStringInstruction)
        {
            c.Fault(Vector.UD);
            return;
        }
        int op = s_stringOp[(int)d.I.Code];
        int size = d.OpSize;
        bool a16 = d.Addr16;
        uint amask = a16 ? 0xFFFFu : 0xFFFF_FFFFu;
        uint delta = (c._eflags & EflagsBits.DF) != 0 ? (uint)-size : (uint)size;
        bool rep = d.Aux != 0;
        if (op is StrIns or StrOuts && !c.CheckIoPermission((ushort)c._gpr[2], size))
        {
            return;
        }
        uint count = c._gpr[1] & amask;
        if (rep && count == 0)
        {
            return;
        }
        long maxIter = rep ? Math.Max(1, c._budgetEnd - c._icount) : 1;
        long done = 0;
        int srcSeg = d.Seg;
        const int es = (int)SegReg.Es;
        while (true)
        {
            uint si = c._gpr[6] & amask, di = c._gpr[7] & amask;
            switch (op)
            {
                case StrMovs:
                {
                    uint v = c.ReadSeg(srcSeg, si, size);
                    if (c.Faulted) goto fault;
                    c.WriteSeg(es, di, size, v);
                    if (c.Faulted) goto fault;
                    c.AdvanceIndex(6, delta, a16);
                    c.AdvanceIndex(7, delta, a16);
                    break;
                }
                case StrCmps:
                {
                    uint a = c.ReadSeg(srcSeg, si, size);
                    uint b = c.ReadSeg(es, di, size);
                    if (c.Faulted) goto fault;
                    c.FlagsSub(a, b, a - b, size);
                    c.AdvanceIndex(6, delta, a16);
                    c.AdvanceIndex(7, delta, a16);
                    break;
                }
                case StrScas:
                {
                    uint b = c.ReadSeg(es, di, size);
                    if (c.Faulted) goto fault;
                    uint a = c._gpr[0] & SizeMask(size);
                    c.FlagsSub(a, b, a - b, size);
                    c.AdvanceIndex(7, delta, a16);
                    break;
                }
                case StrLods:
                {
                    uint v = c.ReadSeg(srcSeg, si, size);
                    if (c.Faulted) goto fault;
                    c.WriteReg(size == 4 ? (byte)0 : size == 2 ? (byte)8 : (byte)16, v);
                    c.AdvanceIndex(6, delta, a16);
                    break;
                }
                case StrStos:
                {
                    c.WriteSeg(es, di, size, c._gpr[0]);
                    if (c.Faulted) goto fault;
                    c.AdvanceIndex(7, delta, a16);
                    break;
                }
                case StrIns:
                {
                    // The destination is probed before the port is read, so a faulting INS reads nothing.
                    if (!c.SegCheck(es, di, size, true, out uint lin) || !c.Translate(lin, true, c._cpl == 3, out _)) goto fault;
                    uint v = c.PortIn((ushort)c._gpr[2], size);
                    c.WriteSeg(es, di, size, v);
                    if (c.Faulted) goto fault;
                    c.AdvanceIndex(7, delta, a16);
                    break;
                }
                default:
                {
                    uint v = c.ReadSeg(srcSeg, si, size);
                    if (c.Faulted) goto fault;
                    c.PortOut((ushort)c._gpr[2], size, v);
                    c.AdvanceIndex(6, delta, a16);
                    break;
                }
            }
            done++;
            if (!rep)
            {
                return;
            }
            count = (count - 1) & amask;
            if (a16) c._gpr[1] = (c._gpr[1] & 0xFFFF_0000) | count;
            else c._gpr[1] = count;
            if (count == 0)
            {
                break;
            }
            if (op is StrCmps or StrScas && (d.Aux == 1 ? !c.GetZF() : c.GetZF()))
            {
                break;
            }
            if (done >= maxIter || (c._event & EvStop) != 0)
            {
                // Resume this REP later (budget slice used up or the VM is stopping).
                c._icount += done;
                c._eip = d.Eip;
                c._event |= EvNoRetire | EvBreak;
                return;
            }
        }
        c._icount += done - 1;
        return;
    fault:
        c._icount += done;
    }

    private void AdvanceIndex(int reg, uint delta, bool a16)
    {
        if (a16) _gpr[reg] = (_gpr[reg] & 0xFFFF_0000) | ((_gpr[reg] + delta) & 0xFFFF);
        else _gpr[reg] += delta;
    }
}
