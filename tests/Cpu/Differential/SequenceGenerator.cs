using Iced.Intel;

namespace SecureVmm.Tests.Cpu.Differential;

/// <summary>One generated instruction (or a guarded group: operand set-up plus the instruction).</summary>
public sealed record GeneratedStep(string Text, Action<Assembler> Emit);

/// <summary>
/// Draws straight-line sequences of integer instructions for the generated differential tier: ALU
/// with every flag-affecting operation, shifts and rotates with random counts, MUL/IMUL, DIV/IDIV with
/// guarded operands (no #DE), BT*, BSF/BSR (guarded non-zero source), SETcc, CMOVcc, string operations
/// with small counts inside the case's scratch block, PUSH/POP (never below what the case pushed),
/// LEA, XCHG/XADD/CMPXCHG/CMPXCHG8B, BSWAP, sign extensions, flag instructions and decimal adjusts.
/// Register, immediate and memory operands are random; memory operands stay inside the case's 64-byte
/// scratch block. The generator tracks which status flags the SDM leaves undefined
/// (<see cref="FlagTable"/>): before an instruction that reads one of them it emits a CMP that defines
/// them all, and <see cref="UndefinedFlags"/> says what the final comparison must mask.
/// </summary>
public sealed class SequenceGenerator(Random rng, uint scratch)
{
    public const int ScratchBytes = 64;

    private static readonly Register[] Regs32 = [Register.EAX, Register.ECX, Register.EDX, Register.EBX, Register.EBP, Register.ESI, Register.EDI];
    private static readonly Register[] Regs16 = [Register.AX, Register.CX, Register.DX, Register.BX, Register.BP, Register.SI, Register.DI];
    private static readonly Register[] Regs8 = [Register.AL, Register.CL, Register.DL, Register.BL, Register.AH, Register.CH, Register.DH, Register.BH];
    private static readonly string[] BinaryAlu = ["add", "adc", "sub", "sbb", "cmp", "and", "or", "xor"];
    private static readonly string[] Unary = ["inc", "dec", "neg", "not"];
    private static readonly string[] Shifts = ["shl", "shr", "sar", "rol", "ror", "rcl", "rcr"];
    private static readonly string[] BitTests = ["bt", "bts", "btr", "btc"];

    private readonly List<GeneratedStep> _steps = [];
    private uint _undefined;
    private int _stackDepth;

    /// <summary>Status flags undefined after the sequence so far (to mask in the comparison).</summary>
    public uint UndefinedFlags => _undefined;

    public IReadOnlyList<GeneratedStep> Steps => _steps;

    /// <summary>Extra step kinds a tier adds (e.g. page remapping under paging), with their weight.</summary>
    public List<(int Weight, Func<SequenceGenerator, Random, GeneratedStep> Make)> Extras { get; } = [];

    private static Code CodeOf(string name) => Enum.Parse<Code>(name, ignoreCase: true);

    private static string Cap(string m) => char.ToUpperInvariant(m[0]) + m[1..];

    private Register Reg(int width) => width switch
    {
        8 => Regs8[rng.Next(Regs8.Length)],
        16 => Regs16[rng.Next(Regs16.Length)],
        _ => Regs32[rng.Next(Regs32.Length)],
    };

    private MemoryOperand Mem(int bytes)
    {
        uint offset = (uint)rng.Next(ScratchBytes - bytes + 1);
        return new MemoryOperand(Register.None, Register.None, 1, scratch + offset, 4);
    }

    private int Imm(int width) => width switch
    {
        8 => rng.Next(-128, 128),
        16 => rng.Next(-32768, 32768),
        _ => rng.Next(4) == 0 ? SpecialValue() : rng.Next(int.MinValue, int.MaxValue),
    };

    private int SpecialValue() => new[] { 0, 1, -1, int.MinValue, int.MaxValue, 0x80, 0x7F, 0xFF, 0x8000, 0xFFFF }[rng.Next(10)];

    private static GeneratedStep One(Instruction i) => new(i.ToString(), a => a.AddInstruction(i));

    private static GeneratedStep Many(params Instruction[] list) =>
        new(string.Join("; ", list.Select(i => i.ToString())), a => { foreach (Instruction i in list) a.AddInstruction(i); });

    private static Instruction MovImm(Register r, uint value) => r.GetSize() switch
    {
        1 => Instruction.Create(Code.Mov_r8_imm8, r, (int)(value & 0xFF)),
        2 => Instruction.Create(Code.Mov_r16_imm16, r, (int)(value & 0xFFFF)),
        _ => Instruction.Create(Code.Mov_r32_imm32, r, value),
    };

    /// <summary>Records a step's flag effect, first defining any undefined flag it reads (CMP defines all six).</summary>
    private void Add(GeneratedStep step, FlagEffect effect)
    {
        if ((effect.Reads & _undefined) != 0)
        {
            Instruction cmp = Instruction.Create(Code.Cmp_rm32_imm32, Reg(32), Imm(32));
            _steps.Add(One(cmp));
            _undefined = 0;
        }
        _steps.Add(step);
        _undefined = (_undefined & ~effect.Defined) | effect.Undefined;
    }

    private void Add(GeneratedStep step, string mnemonic) => Add(step, FlagTable.Compared(mnemonic));

    /// <summary>Appends <paramref name="count"/> random steps.</summary>
    public void Generate(int count)
    {
        int total = Families.Sum(f => f.Weight) + Extras.Sum(e => e.Weight);
        for (int n = 0; n < count; n++)
        {
            int pick = rng.Next(total);
            bool done = false;
            foreach (var (weight, make) in Families)
            {
                if (pick < weight)
                {
                    make(this);
                    done = true;
                    break;
                }
                pick -= weight;
            }
            if (!done)
            {
                foreach (var (weight, make) in Extras)
                {
                    if (pick < weight)
                    {
                        Add(make(this, rng), "invlpg");
                        break;
                    }
                    pick -= weight;
                }
            }
        }
    }

    /// <summary>The instruction families and their weights (data, not a switch ladder).</summary>
    private static readonly (int Weight, Action<SequenceGenerator> Make)[] Families =
    [
        (14, g => g.BinaryAluStep()),
        (4, g => g.UnaryStep()),
        (10, g => g.ShiftStep()),
        (3, g => g.DoubleShiftStep()),
        (5, g => g.MultiplyStep()),
        (3, g => g.DivideStep()),
        (4, g => g.BitTestStep()),
        (2, g => g.BitScanStep()),
        (4, g => g.SetOrMoveIfStep()),
        (4, g => g.ExchangeStep()),
        (3, g => g.StackStep()),
        (3, g => g.StringStep()),
        (4, g => g.MoveStep()),
        (3, g => g.MiscStep()),
    ];

    private int Width() => rng.Next(3) switch { 0 => 8, 1 => 16, _ => 32 };

    private void BinaryAluStep()
    {
        string m = BinaryAlu[rng.Next(BinaryAlu.Length)];
        int w = Width();
        int form = rng.Next(5);
        if (rng.Next(8) == 0)
        {
            m = "test";
            form = rng.Next(2) == 0 ? 0 : 3;
        }
        string c = Cap(m);
        Instruction i = form switch
        {
            0 => Instruction.Create(CodeOf($"{c}_rm{w}_r{w}"), Reg(w), Reg(w)),
            1 when m != "test" => Instruction.Create(CodeOf($"{c}_rm{w}_r{w}"), Mem(w / 8), Reg(w)),
            2 when m != "test" => Instruction.Create(CodeOf($"{c}_r{w}_rm{w}"), Reg(w), Mem(w / 8)),
            4 when w != 8 && m != "test" => rng.Next(2) == 0
                ? Instruction.Create(CodeOf($"{c}_rm{w}_imm8"), Reg(w), rng.Next(-128, 128))
                : Instruction.Create(CodeOf($"{c}_rm{w}_imm8"), Mem(w / 8), rng.Next(-128, 128)),
            _ => rng.Next(2) == 0
                ? Instruction.Create(CodeOf($"{c}_rm{w}_imm{w}"), Reg(w), Imm(w))
                : Instruction.Create(CodeOf($"{c}_rm{w}_imm{w}"), Mem(w / 8), Imm(w)),
        };
        Add(One(i), m);
    }

    private void UnaryStep()
    {
        string m = Unary[rng.Next(Unary.Length)];
        int w = Width();
        Code code = CodeOf($"{Cap(m)}_rm{w}");
        Add(One(rng.Next(3) == 0 ? Instruction.Create(code, Mem(w / 8)) : Instruction.Create(code, Reg(w))), m);
    }

    /// <summary>Counts: mostly around the operand sizes, sometimes any byte (the CPU masks to 5 bits).</summary>
    private int ShiftCount(int width) => rng.Next(4) switch
    {
        0 => rng.Next(256),
        1 => new[] { 0, 1, width - 1, width, width + 1, 31, 32, 33 }[rng.Next(8)],
        _ => rng.Next(width + 2),
    };

    private void ShiftStep()
    {
        string m = Shifts[rng.Next(Shifts.Length)];
        int w = Width();
        string c = Cap(m);
        bool memory = rng.Next(4) == 0;
        MemoryOperand mem = Mem(w / 8);
        Register reg = Reg(w);
        switch (rng.Next(3))
        {
            case 0:
                Code one = CodeOf($"{c}_rm{w}_1");
                Add(One(memory ? Instruction.Create(one, mem, 1) : Instruction.Create(one, reg, 1)), FlagTable.Shift(m, w, 1));
                break;
            case 1:
                int count = ShiftCount(w);
                Code imm = CodeOf($"{c}_rm{w}_imm8");
                Add(One(memory ? Instruction.Create(imm, mem, count) : Instruction.Create(imm, reg, count)), FlagTable.Shift(m, w, count));
                break;
            default:
                int byCl = ShiftCount(w);
                Code cl = CodeOf($"{c}_rm{w}_CL");
                if (!memory && (reg == Register.CL || reg == Register.CX || reg == Register.ECX || reg == Register.CH))
                {
                    reg = w == 8 ? Register.DL : w == 16 ? Register.DX : Register.EDX;
                }
                Add(Many(MovImm(Register.CL, (uint)byCl), memory ? Instruction.Create(cl, mem, Register.CL) : Instruction.Create(cl, reg, Register.CL)),
                    FlagTable.Shift(m, w, byCl));
                break;
        }
    }

    private void DoubleShiftStep()
    {
        string m = rng.Next(2) == 0 ? "shld" : "shrd";
        int w = rng.Next(2) == 0 ? 16 : 32;
        // A count above the operand size leaves result and flags undefined (SDM vol. 2B, SHLD): drawn only up to it.
        int count = rng.Next(w + 1) | (rng.Next(4) == 0 ? 0 : 0);
        if (rng.Next(6) == 0 && w == 32)
        {
            count = rng.Next(256) & ~0x1F | count;   // high bits masked away by the CPU
        }
        Register dst = Reg(w), src = Reg(w);
        bool memory = rng.Next(4) == 0;
        MemoryOperand mem = Mem(w / 8);
        if (rng.Next(2) == 0)
        {
            Code imm = CodeOf($"{Cap(m)}_rm{w}_r{w}_imm8");
            Add(One(memory ? Instruction.Create(imm, mem, src, count) : Instruction.Create(imm, dst, src, count)), FlagTable.Shift(m, w, count));
        }
        else
        {
            Code cl = CodeOf($"{Cap(m)}_rm{w}_r{w}_CL");
            if (dst is Register.CX or Register.ECX)
            {
                dst = w == 16 ? Register.DX : Register.EDX;
            }
            if (src is Register.CX or Register.ECX)
            {
                src = w == 16 ? Register.BX : Register.EBX;
            }
            Add(Many(MovImm(Register.CL, (uint)count), memory ? Instruction.Create(cl, mem, src, Register.CL) : Instruction.Create(cl, dst, src, Register.CL)),
                FlagTable.Shift(m, w, count));
        }
    }

    private void MultiplyStep()
    {
        int w = Width();
        switch (rng.Next(4))
        {
            case 0 or 1:
                string m = rng.Next(2) == 0 ? "mul" : "imul";
                Code code = CodeOf($"{Cap(m)}_rm{w}");
                Add(One(rng.Next(3) == 0 ? Instruction.Create(code, Mem(w / 8)) : Instruction.Create(code, Reg(w))), m);
                break;
            case 2:
                w = w == 8 ? 32 : w;
                Code two = CodeOf($"Imul_r{w}_rm{w}");
                Add(One(rng.Next(3) == 0 ? Instruction.Create(two, Reg(w), Mem(w / 8)) : Instruction.Create(two, Reg(w), Reg(w))), "imul");
                break;
            default:
                w = w == 8 ? 32 : w;
                bool short8 = rng.Next(2) == 0;
                Code three = CodeOf(short8 ? $"Imul_r{w}_rm{w}_imm8" : $"Imul_r{w}_rm{w}_imm{w}");
                int imm = short8 ? rng.Next(-128, 128) : Imm(w);
                Add(One(rng.Next(3) == 0 ? Instruction.Create(three, Reg(w), Mem(w / 8), imm) : Instruction.Create(three, Reg(w), Reg(w), imm)), "imul");
                break;
        }
    }

    /// <summary>DIV/IDIV with operands set so that the quotient fits (no #DE, SDM vol. 2A, DIV/IDIV).</summary>
    private void DivideStep()
    {
        int w = Width();
        bool signed = rng.Next(2) == 0;
        uint mask = w == 32 ? 0xFFFF_FFFF : (1u << w) - 1;
        uint divisor = (uint)rng.NextInt64(1, (long)mask + 1);
        if (rng.Next(4) == 0)
        {
            divisor = new uint[] { 1, 2, mask, mask >> 1, (mask >> 1) + 1, 10 }[rng.Next(6)] & mask;
        }
        uint low = (uint)rng.NextInt64(0, (long)mask + 1);
        uint minimum = (mask >> 1) + 1;
        if (signed && divisor == mask && low == minimum)
        {
            low--;   // MIN / -1 overflows
        }
        Register[] pool = w switch
        {
            8 => [Register.CL, Register.DL, Register.BL, Register.CH, Register.DH, Register.BH],
            16 => [Register.CX, Register.BX, Register.BP, Register.SI, Register.DI],
            _ => [Register.ECX, Register.EBX, Register.EBP, Register.ESI, Register.EDI],
        };
        Register divReg = pool[rng.Next(pool.Length)];
        var list = new List<Instruction>();
        Register lowReg = w == 8 ? Register.AL : w == 16 ? Register.AX : Register.EAX;
        list.Add(MovImm(lowReg, low));
        if (signed)
        {
            list.Add(Instruction.Create(w == 8 ? Code.Cbw : w == 16 ? Code.Cwd : Code.Cdq));
        }
        else
        {
            uint high = (uint)rng.NextInt64(0, divisor);
            list.Add(MovImm(w == 8 ? Register.AH : w == 16 ? Register.DX : Register.EDX, high));
        }
        string m = signed ? "idiv" : "div";
        Code code = CodeOf($"{Cap(m)}_rm{w}");
        if (rng.Next(3) == 0)
        {
            MemoryOperand mem = Mem(w / 8);
            list.Add(w switch
            {
                8 => Instruction.Create(Code.Mov_rm8_imm8, mem, (int)divisor),
                16 => Instruction.Create(Code.Mov_rm16_imm16, mem, (int)divisor),
                _ => Instruction.Create(Code.Mov_rm32_imm32, mem, divisor),
            });
            list.Add(Instruction.Create(code, mem));
        }
        else
        {
            list.Add(MovImm(divReg, divisor));
            list.Add(Instruction.Create(code, divReg));
        }
        Add(Many([.. list]), m);
    }

    private void BitTestStep()
    {
        string m = BitTests[rng.Next(BitTests.Length)];
        int w = rng.Next(2) == 0 ? 16 : 32;
        string c = Cap(m);
        Instruction i = rng.Next(3) switch
        {
            0 => Instruction.Create(CodeOf($"{c}_rm{w}_r{w}"), Reg(w), Reg(w)),
            1 => Instruction.Create(CodeOf($"{c}_rm{w}_imm8"), Reg(w), rng.Next(256)),
            // Memory with an immediate offset: the CPU uses it modulo the operand size (SDM vol. 2A, BT).
            _ => Instruction.Create(CodeOf($"{c}_rm{w}_imm8"), Mem(w / 8), rng.Next(256)),
        };
        Add(One(i), m);
    }

    /// <summary>BSF/BSR with a non-zero source: a zero source leaves the destination undefined (SDM vol. 2A, BSF).</summary>
    private void BitScanStep()
    {
        string m = rng.Next(2) == 0 ? "bsf" : "bsr";
        int w = rng.Next(2) == 0 ? 16 : 32;
        Register src = Reg(w), dst = Reg(w);
        int bit = rng.Next(w);
        var orBit = Instruction.Create(CodeOf($"Or_rm{w}_imm{w}"), src, w == 16 ? (int)(short)(1 << bit) : 1 << bit);
        Add(One(orBit), "or");
        Add(One(Instruction.Create(CodeOf($"{Cap(m)}_r{w}_rm{w}"), dst, src)), m);
    }

    private void SetOrMoveIfStep()
    {
        int cc = rng.Next(16);
        var reads = new FlagEffect(FlagTable.ConditionReads(cc), 0, 0);
        string name = FlagTable.ConditionNames[cc];
        if (rng.Next(2) == 0)
        {
            Code set = CodeOf($"Set{name}_rm8");
            Add(One(rng.Next(3) == 0 ? Instruction.Create(set, Mem(1)) : Instruction.Create(set, Reg(8))), reads);
        }
        else
        {
            int w = rng.Next(2) == 0 ? 16 : 32;
            Code cmov = CodeOf($"Cmov{name}_r{w}_rm{w}");
            Add(One(rng.Next(3) == 0 ? Instruction.Create(cmov, Reg(w), Mem(w / 8)) : Instruction.Create(cmov, Reg(w), Reg(w))), reads);
        }
    }

    private void ExchangeStep()
    {
        int w = Width();
        string m = new[] { "xchg", "xadd", "cmpxchg", "bswap", "cmpxchg8b" }[rng.Next(5)];
        switch (m)
        {
            case "bswap":
                Add(One(Instruction.Create(Code.Bswap_r32, Reg(32))), m);
                break;
            case "cmpxchg8b":
                // QEMU 7.2 leaves garbage in its lazy flags after CMPXCHG8B, even outside the status flags
                // (FlagTable.QemuDepartures): record ZF with SETZ, then let CMP define every status flag again
                // before anything (PUSHFD, the case's flag dump) can copy them.
                Add(Many(Instruction.Create(Code.Cmpxchg8b_m64, Mem(8)), Instruction.Create(Code.Sete_rm8, Reg(8)),
                    Instruction.Create(Code.Cmp_rm32_imm32, Reg(32), Imm(32))), "cmp");
                break;
            default:
                Code code = CodeOf($"{Cap(m)}_rm{w}_r{w}");
                Add(One(rng.Next(2) == 0 ? Instruction.Create(code, Mem(w / 8), Reg(w)) : Instruction.Create(code, Reg(w), Reg(w))), m);
                break;
        }
    }

    private void StackStep()
    {
        bool push = _stackDepth < 4 || rng.Next(2) == 0;
        if (push && _stackDepth < 64)
        {
            Instruction i = rng.Next(5) switch
            {
                0 => Instruction.Create(Code.Push_rm32, Mem(4)),
                1 => Instruction.Create(Code.Pushd_imm32, Imm(32)),
                2 => Instruction.Create(Code.Push_r16, Reg(16)),
                _ => Instruction.Create(Code.Push_r32, Reg(32)),
            };
            _stackDepth += i.Code == Code.Push_r16 ? 2 : 4;
            Add(One(i), "push");
        }
        else if (_stackDepth >= 4)
        {
            Instruction i = rng.Next(4) == 0 ? Instruction.Create(Code.Pop_rm32, Mem(4)) : Instruction.Create(Code.Pop_r32, Reg(32));
            _stackDepth -= 4;
            Add(One(i), "pop");
        }
    }

    /// <summary>String operations with 1 to 8 elements inside the scratch block, either direction.</summary>
    private void StringStep()
    {
        int size = new[] { 1, 2, 4 }[rng.Next(3)];
        int count = rng.Next(1, 9);
        bool down = rng.Next(2) == 0;
        int span = count * size;
        uint Start() => scratch + (uint)(down ? span - size + rng.Next(ScratchBytes - span + 1) : rng.Next(ScratchBytes - span + 1));
        uint src = Start(), dst = Start();
        string op = new[] { "movs", "stos", "lods", "cmps", "scas" }[rng.Next(5)];
        bool rep = rng.Next(4) != 0;
        string prefix = !rep ? "" : op is "cmps" or "scas" ? (rng.Next(2) == 0 ? "repe " : "repne ") : "rep ";
        string suffix = size switch { 1 => "b", 2 => "w", _ => "d" };
        var setup = new[]
        {
            Instruction.Create(down ? Code.Std : Code.Cld),
            Instruction.Create(Code.Mov_r32_imm32, Register.ESI, src),
            Instruction.Create(Code.Mov_r32_imm32, Register.EDI, dst),
            Instruction.Create(Code.Mov_r32_imm32, Register.ECX, (uint)(rep ? count : 1)),
        };
        string text = string.Join("; ", setup.Select(i => i.ToString())) + $"; {prefix}{op}{suffix}";
        Add(new GeneratedStep(text, a =>
        {
            foreach (Instruction i in setup)
            {
                a.AddInstruction(i);
            }
            EmitString(a, op, size, prefix);
        }), new FlagEffect(0, FlagTable.DF | FlagTable.ByMnemonic[op].Defined, 0));
    }

    private static void EmitString(Assembler a, string op, int size, string prefix)
    {
        Assembler p = prefix switch { "rep " => a.rep, "repe " => a.repe, "repne " => a.repne, _ => a };
        switch (op, size)
        {
            case ("movs", 1): p.movsb(); break;
            case ("movs", 2): p.movsw(); break;
            case ("movs", _): p.movsd(); break;
            case ("stos", 1): p.stosb(); break;
            case ("stos", 2): p.stosw(); break;
            case ("stos", _): p.stosd(); break;
            case ("lods", 1): p.lodsb(); break;
            case ("lods", 2): p.lodsw(); break;
            case ("lods", _): p.lodsd(); break;
            case ("cmps", 1): p.cmpsb(); break;
            case ("cmps", 2): p.cmpsw(); break;
            case ("cmps", _): p.cmpsd(); break;
            case ("scas", 1): p.scasb(); break;
            case ("scas", 2): p.scasw(); break;
            default: p.scasd(); break;
        }
    }

    private void MoveStep()
    {
        switch (rng.Next(5))
        {
            case 0:
                Add(One(Instruction.Create(Code.Mov_rm32_r32, Mem(4), Reg(32))), "mov");
                break;
            case 1:
                Add(One(Instruction.Create(Code.Mov_r32_imm32, Reg(32), (uint)Imm(32))), "mov");
                break;
            case 2:
                string ext = rng.Next(2) == 0 ? "Movzx" : "Movsx";
                (int to, int from) = new[] { (32, 8), (32, 16), (16, 8) }[rng.Next(3)];
                Code code = CodeOf($"{ext}_r{to}_rm{from}");
                Add(One(rng.Next(3) == 0 ? Instruction.Create(code, Reg(to), Mem(from / 8)) : Instruction.Create(code, Reg(to), Reg(from))),
                    ext.ToLowerInvariant());
                break;
            default:
                // LEA of base + index * scale + displacement: pure address arithmetic, no memory access.
                Register b = rng.Next(4) == 0 ? Register.None : Reg(32);
                Register x = rng.Next(3) == 0 ? Register.None : Reg(32);
                var address = new MemoryOperand(b, x, 1 << rng.Next(4), Imm(32), 4);
                bool lea16 = rng.Next(4) == 0;
                Add(One(Instruction.Create(lea16 ? Code.Lea_r16_m : Code.Lea_r32_m, lea16 ? Reg(16) : Reg(32), address)), "lea");
                break;
        }
    }

    private static readonly (Code Code, string Mnemonic)[] NoOperand =
    [
        (Code.Lahf, "lahf"), (Code.Sahf, "sahf"), (Code.Clc, "clc"), (Code.Stc, "stc"), (Code.Cmc, "cmc"),
        (Code.Cbw, "cbw"), (Code.Cwde, "cwde"), (Code.Cwd, "cwd"), (Code.Cdq, "cdq"),
        (Code.Daa, "daa"), (Code.Das, "das"), (Code.Aaa, "aaa"), (Code.Aas, "aas"), (Code.Pushfd, "pushfd"),
    ];

    private void MiscStep()
    {
        int pick = rng.Next(NoOperand.Length + 2);
        if (pick == NoOperand.Length)
        {
            // AAM with a zero base raises #DE (SDM vol. 2A, AAM): bases 1..255.
            Add(One(Instruction.Create(Code.Aam_imm8, rng.Next(4) == 0 ? 10 : rng.Next(1, 256))), "aam");
            return;
        }
        if (pick == NoOperand.Length + 1)
        {
            Add(One(Instruction.Create(Code.Aad_imm8, rng.Next(4) == 0 ? 10 : rng.Next(256))), "aad");
            return;
        }
        var (code, mnemonic) = NoOperand[pick];
        if (code == Code.Pushfd)
        {
            if (_stackDepth >= 64)
            {
                return;
            }
            _stackDepth += 4;
        }
        Add(One(Instruction.Create(code)), mnemonic);
    }
}
