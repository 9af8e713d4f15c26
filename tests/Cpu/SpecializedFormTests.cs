using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Tcb.Cpu;
using Xunit;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.Cpu;

/// <summary>
/// The specialized forms the run loop executes inline (FastPaths.cs) against the generic handlers:
/// random programs of the forms that have a fast path, mixed with generic instructions that read
/// the flags (ADC, SBB, RCL, SETcc, LAHF, Jcc) right after INC/DEC, rotates and the rest, run on
/// two CPUs, one with <see cref="SecureVmm.Tcb.Cpu.Cpu.SpecializedForms"/> off; registers, EFLAGS
/// and the data window must end identical.
/// </summary>
public class SpecializedFormTests
{
    private const uint CodeAddress = 0x10_0000;
    private const uint DataAddress = 0x20_0000;
    private const int DataBytes = 256;
    private const int WindowBytes = DataBytes + 64 * 4; // the data, then a log of 64 EFLAGS values

    // EBX holds the data window's address and ESP the stack; the others are free.
    private static readonly AssemblerRegister32[] Free = [eax, ecx, edx, esi, edi, ebp];
    private static readonly AssemblerRegister8[] Bytes = [al, cl, dl, ah, ch, dh];
    private static readonly AssemblerRegister16[] Words = [ax, cx, dx, si, di, bp];

    /// <summary>Ops 0 to <see cref="SharedOps"/> - 1 of this mix, which CompiledBlockTests runs too.</summary>
    internal const int SharedOps = 49;

    internal static void Emit(Assembler a, int op, int r1, int r2, uint imm, int disp)
    {
        var d = Free[r1];
        var s = Free[r2];
        var m = __dword_ptr[ebx + (disp & 0xFC)];
        int shift = (int)(imm % 34); // 0..33: the masked-to-zero counts and counts above 31 too
        switch (op)
        {
            case 0: a.mov(d, s); break;
            case 1: a.mov(d, imm); break;
            case 2: a.mov(d, m); break;
            case 3: a.mov(m, s); break;
            case 4: a.mov(m, imm); break;
            case 5: a.add(d, s); break;
            case 6: a.add(d, imm); break;
            case 7: a.add(d, m); break;
            case 8: a.sub(d, s); break;
            case 9: a.sub(d, imm); break;
            case 10: a.sub(d, m); break;
            case 11: a.cmp(d, s); break;
            case 12: a.cmp(d, imm); break;
            case 13: a.cmp(d, m); break;
            case 14: a.cmp(m, s); break;
            case 15: a.cmp(m, imm); break;
            case 16: a.and(d, s); break;
            case 17: a.and(d, imm); break;
            case 18: a.or(d, s); break;
            case 19: a.or(d, imm); break;
            case 20: a.xor(d, s); break;
            case 21: a.xor(d, imm); break;
            case 22: a.test(d, s); break;
            case 23: a.test(d, imm); break;
            case 24: a.inc(d); break;
            case 25: a.dec(d); break;
            case 26: a.lea(d, __[s + d * 4 + (int)(imm & 0xFFF)]); break;
            case 27: a.shl(d, (byte)shift); break;
            case 28: a.shr(d, (byte)shift); break;
            case 29: a.sar(d, (byte)shift); break;
            case 30: a.rol(d, (byte)shift); break;
            case 31: a.ror(d, (byte)shift); break;
            case 32: a.shl(d, 1); break;
            case 33: a.push(s); a.pop(d); break;
            case 34: a.movzx(d, Bytes[r2]); break;
            case 35: a.movzx(d, Words[r2]); break;
            case 36: a.movzx(d, __byte_ptr[ebx + disp]); break;
            case 37: a.imul(d, s); break;
            case 38: a.imul(d, s, (int)imm); break;
            // Generic instructions that read the flags the previous instruction left.
            case 39: a.adc(d, s); break;
            case 40: a.sbb(d, imm); break;
            case 41: a.rcl(d, 1); break;
            case 42: a.lahf(); break;
            case 43: a.setb(Bytes[r1]); break;
            case 44: a.seto(Bytes[r1]); break;
            case 45: a.setle(Bytes[r1]); break;
            case 46: a.setp(Bytes[r1]); break;
            case 47:
            {
                // A conditional branch over one instruction: both paths must agree on the condition.
                var skip = a.CreateLabel();
                a.jg(skip);
                a.not(d);
                a.Label(ref skip);
                break;
            }
            case 48: a.add(Bytes[r1], Bytes[r2]); break;
            default: a.inc(Words[r1]); break;
        }
    }

    private const int OpCount = 50;

    private static (uint[] Regs, uint Flags, byte[] Data) Run(uint[] init, (int Op, int R1, int R2, uint Imm, int Disp)[] program, bool specialized)
    {
        using var h = new CpuHarness(ramMiB: 4);
        h.Cpu.SpecializedForms = specialized;
        byte[] code = CpuHarness.Assemble(32, CodeAddress, a =>
        {
            a.mov(ebx, DataAddress);
            for (int i = 0; i < Free.Length; i++)
            {
                a.mov(Free[i], init[i]);
            }
            // Start from flags set by an add of two of the initial values.
            a.add(eax, init[6]);
            int step = 0;
            foreach (var (op, r1, r2, imm, disp) in program)
            {
                Emit(a, op, r1, r2, imm, disp);
                if ((disp & 1) == 0)
                {
                    // After about one step in two, log all of EFLAGS (PUSHFD settles the lazy
                    // flags, so the other steps leave lazy chains such as INC, ROL, ADC intact).
                    a.pushfd();
                    a.pop(__dword_ptr[ebx + DataBytes + (step % 64) * 4]);
                }
                step++;
            }
            a.hlt();
        });
        h.Load(CodeAddress, code);
        byte[] data = new byte[DataBytes];
        for (int i = 0; i < DataBytes; i++)
        {
            data[i] = (byte)(init[7] * (uint)(i + 1) >> 8);
        }
        h.Load(DataAddress, data);
        h.Cpu.EnterFlatProtectedMode(CodeAddress);
        h.Cpu.Esp = 0x9_0000;
        var status = h.Run(100_000);
        Assert.Equal(RunStatus.Halted, status);
        var regs = new uint[8];
        for (int i = 0; i < 8; i++)
        {
            regs[i] = h.Cpu.GetGpr((Gpr)i);
        }
        return (regs, h.Cpu.Eflags, h.Ram.Slice(DataAddress, WindowBytes).ToArray());
    }

    private static readonly uint[] Interesting = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0x8000_0001, 0xFFFF_FFFE, 0xFFFF_FFFF];

    private static Gen<uint> Value =>
        Gen.OneOf(Gen.Elements(Interesting), ArbMap.Default.GeneratorFor<uint>());

    [Fact]
    public void SpecializedFormsMatchTheGenericHandlers()
    {
        var step = from op in Gen.Choose(0, OpCount - 1)
                   from r1 in Gen.Choose(0, Free.Length - 1)
                   from r2 in Gen.Choose(0, Free.Length - 1)
                   from imm in Value
                   from disp in Gen.Choose(0, DataBytes - 4)
                   select (op, r1, r2, imm, disp);
        var cases = from init in Gen.ArrayOf(Value, 8)
                    from length in Gen.Choose(10, 60)
                    from program in step.ArrayOf(length)
                    select (init, program);
        var property = Prop.ForAll(cases.ToArbitrary(), c =>
        {
            var fast = Run(c.init, c.program, specialized: true);
            var generic = Run(c.init, c.program, specialized: false);
            Assert.Equal(generic.Regs, fast.Regs);
            Assert.Equal(generic.Flags.ToString("X8"), fast.Flags.ToString("X8"));
            Assert.Equal(generic.Data, fast.Data);
        });
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(500), property);
    }
}
