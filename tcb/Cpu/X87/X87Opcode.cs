using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

/// <summary>
/// The 11-bit last-instruction opcode (FOP, SDM vol.1 8.1.9, figure 8-8): the low three bits of
/// the first opcode byte and the whole ModR/M byte. Iced keeps the decoded form, not the raw
/// bytes, so the ModR/M byte is rebuilt from the opcode info and the memory operand.
/// </summary>
internal static class X87Opcode
{
    public static ushort Compute(in Instruction insn)
    {
        OpCodeInfo info = insn.OpCode;
        uint opcode = info.OpCode;
        if (info.OpCodeLength == 2)
        {
            // Register forms "D8 C0+i": add the ST(i) index (the operand other than ST0, if any).
            int sti = 0;
            for (int k = 0; k < insn.OpCount; k++)
            {
                if (insn.GetOpKind(k) == OpKind.Register)
                {
                    Register r = insn.GetOpRegister(k);
                    if (r >= Register.ST0 && r <= Register.ST7)
                    {
                        sti = Math.Max(sti, r - Register.ST0);
                    }
                }
            }
            uint second = (opcode & 0xFF) + (uint)sti;
            return (ushort)((((opcode >> 8) & 7) << 8) | (second & 0xFF));
        }
        int reg = info.GroupIndex < 0 ? 0 : info.GroupIndex;
        int modrm = (reg << 3) | ModRm(insn);
        return (ushort)(((opcode & 7) << 8) | (uint)modrm);
    }

    /// <summary>mod and r/m fields of the memory operand (SDM vol.2A tables 2-1 and 2-2).</summary>
    private static int ModRm(in Instruction insn)
    {
        Register baseReg = insn.MemoryBase;
        Register index = insn.MemoryIndex;
        int displSize = insn.MemoryDisplSize;
        bool address16 = baseReg is >= Register.AX and <= Register.DI || index is >= Register.AX and <= Register.DI;
        if (address16)
        {
            int rm = (baseReg, index) switch
            {
                (Register.BX, Register.SI) => 0,
                (Register.BX, Register.DI) => 1,
                (Register.BP, Register.SI) => 2,
                (Register.BP, Register.DI) => 3,
                (Register.SI, Register.None) => 4,
                (Register.DI, Register.None) => 5,
                (Register.BP, Register.None) => 6,
                _ => 7,
            };
            int mod16 = displSize switch { 0 => 0, 1 => 1, _ => 2 };
            return (mod16 << 6) | rm;
        }
        if (baseReg == Register.None && index == Register.None)
        {
            // Absolute disp16 (16-bit addressing, rm 6) or disp32 (rm 5), mod 00.
            return displSize == 2 ? 6 : 5;
        }
        int mod = baseReg == Register.None ? 0 : displSize switch { 0 => 0, 1 => 1, _ => 2 };
        if (index != Register.None || baseReg == Register.ESP)
        {
            return (mod << 6) | 4;       // SIB follows
        }
        return (mod << 6) | ((baseReg - Register.EAX) & 7);
    }
}
