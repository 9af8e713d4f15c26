using System.Buffers.Binary;
using Iced.Intel;

namespace SecureVmm.Tcb.Cpu.X87;

// Control instructions and state images (SDM vol.1 8.1.10, 8.3.12, 10.5.1; vol.2A FSTSW, FSTCW,
// FLDCW, FSTENV, FLDENV, FSAVE, FRSTOR, FXSAVE, FXRSTOR).
public sealed partial class X87Unit
{
    /// <summary>Size of the FNSTENV image: 28 bytes with a 32-bit operand size, 14 with 16-bit.</summary>
    public static int EnvironmentSize(bool operandSize32) => operandSize32 ? 28 : 14;

    /// <summary>Size of the FNSAVE image: the environment plus eight 10-byte registers.</summary>
    public static int SaveSize(bool operandSize32) => EnvironmentSize(operandSize32) + 80;

    /// <summary>Bytes 0..159 of the 512-byte FXSAVE image belong to the x87 (SDM vol.1 table 10-2).</summary>
    public const int FxsaveX87Bytes = 160;

    private X87Outcome ExecuteControl(Mnemonic mnemonic, in Instruction insn, IX87Memory mem, ref X87CpuContext ctx)
    {
        Span<byte> buffer = stackalloc byte[108];
        switch (mnemonic)
        {
            case Mnemonic.Fnstsw:
            case Mnemonic.Fstsw:
                if (insn.OpCount > 0 && insn.Op0Kind == OpKind.Register)
                {
                    ctx.Ax = StatusWord;
                    ctx.AxWritten = true;
                    return X87Outcome.Done;
                }
                BinaryPrimitives.WriteUInt16LittleEndian(buffer, StatusWord);
                return mem.Write(0, buffer[..2]) ? X87Outcome.Done : X87Outcome.MemoryFault;
            case Mnemonic.Fnstcw:
            case Mnemonic.Fstcw:
                BinaryPrimitives.WriteUInt16LittleEndian(buffer, _control);
                return mem.Write(0, buffer[..2]) ? X87Outcome.Done : X87Outcome.MemoryFault;
            case Mnemonic.Fldcw:
                if (!mem.Read(0, buffer[..2]))
                {
                    return X87Outcome.MemoryFault;
                }
                SetControlWord(BinaryPrimitives.ReadUInt16LittleEndian(buffer));
                return X87Outcome.Done;
            case Mnemonic.Fnstenv:
            case Mnemonic.Fstenv:
            {
                Span<byte> image = buffer[..EnvironmentSize(ctx.OperandSize32)];
                WriteEnvironment(image, ctx.RealMode, ctx.OperandSize32);
                if (!mem.Write(0, image))
                {
                    return X87Outcome.MemoryFault;
                }
                // FNSTENV masks all exceptions after saving (SDM vol.2A FSTENV/FNSTENV).
                SetControlWord((ushort)(_control | X87Control.ExceptionMasks));
                return X87Outcome.Done;
            }
            case Mnemonic.Fldenv:
            {
                Span<byte> image = buffer[..EnvironmentSize(ctx.OperandSize32)];
                if (!mem.Read(0, image))
                {
                    return X87Outcome.MemoryFault;
                }
                ReadEnvironment(image, ctx.RealMode, ctx.OperandSize32);
                return X87Outcome.Done;
            }
            case Mnemonic.Fnsave:
            case Mnemonic.Fsave:
            {
                int envSize = EnvironmentSize(ctx.OperandSize32);
                Span<byte> image = buffer[..SaveSize(ctx.OperandSize32)];
                WriteEnvironment(image, ctx.RealMode, ctx.OperandSize32);
                for (int i = 0; i < 8; i++)
                {
                    St(i).Write(image.Slice(envSize + 10 * i, 10));
                }
                if (!mem.Write(0, image))
                {
                    return X87Outcome.MemoryFault;
                }
                Initialize();   // FNSAVE then initialises the FPU, as FNINIT (SDM vol.2A FSAVE/FNSAVE)
                return X87Outcome.Done;
            }
            default:    // Frstor
            {
                int envSize = EnvironmentSize(ctx.OperandSize32);
                Span<byte> image = buffer[..SaveSize(ctx.OperandSize32)];
                if (!mem.Read(0, image))
                {
                    return X87Outcome.MemoryFault;
                }
                ReadEnvironment(image, ctx.RealMode, ctx.OperandSize32);
                for (int i = 0; i < 8; i++)
                {
                    _registers[Physical(i)] = Float80.Read(image.Slice(envSize + 10 * i, 10));
                }
                return X87Outcome.Done;
            }
        }
    }

    /// <summary>Bit 6 reads as 1 and bits 15..13 as 0 on the 80387 and later.</summary>
    private void SetControlWord(ushort value)
    {
        _control = (ushort)((value & 0x1F3F) | 0x0040);
        UpdateErrorSummary();   // unmasking a set flag makes it pending (SDM vol.2A FLDCW)
    }

    private void SetStatusWord(ushort value)
    {
        _top = (value & X87Status.TopMask) >> X87Status.TopShift;
        _status = (ushort)(value & ~X87Status.TopMask);
        UpdateErrorSummary();
    }

    /// <summary>Tag word 11 = empty; other tags are recomputed from the register contents when read.</summary>
    private void SetTagWord(ushort tags)
    {
        _validMask = 0;
        for (int p = 0; p < 8; p++)
        {
            if (((tags >> (2 * p)) & 3) != 3)
            {
                _validMask |= 1 << p;
            }
        }
    }

    /// <summary>In real mode the pointers are stored as 20/32-bit linear addresses (selector * 16 + offset).</summary>
    private static uint Linear(ushort selector, uint offset) => ((uint)selector << 4) + offset;

    /// <summary>
    /// Environment images, SDM vol.1 8.1.10 figures 8-9 (32-bit protected), 8-10 (32-bit real),
    /// 8-11 (16-bit protected) and 8-12 (16-bit real). Reserved halves are written as FFFFh.
    /// </summary>
    private void WriteEnvironment(Span<byte> image, bool realMode, bool operandSize32)
    {
        ushort fop = LastOpcode;
        if (operandSize32)
        {
            WriteU32(image, 0, 0xFFFF_0000u | _control);
            WriteU32(image, 4, 0xFFFF_0000u | StatusWord);
            WriteU32(image, 8, 0xFFFF_0000u | TagWord);
            if (realMode)
            {
                uint ip = Linear(_instructionSelector, _instructionOffset);
                uint dp = Linear(_dataSelector, _dataOffset);
                WriteU32(image, 12, 0xFFFF_0000u | (ip & 0xFFFF));
                WriteU32(image, 16, ((ip >> 16) << 12) | fop);
                WriteU32(image, 20, 0xFFFF_0000u | (dp & 0xFFFF));
                WriteU32(image, 24, (dp >> 16) << 12);
            }
            else
            {
                WriteU32(image, 12, _instructionOffset);
                WriteU32(image, 16, ((uint)fop << 16) | _instructionSelector);
                WriteU32(image, 20, _dataOffset);
                WriteU32(image, 24, 0xFFFF_0000u | _dataSelector);
            }
            return;
        }
        WriteU16(image, 0, _control);
        WriteU16(image, 2, StatusWord);
        WriteU16(image, 4, TagWord);
        if (realMode)
        {
            uint ip = Linear(_instructionSelector, _instructionOffset);
            uint dp = Linear(_dataSelector, _dataOffset);
            WriteU16(image, 6, (ushort)ip);
            WriteU16(image, 8, (ushort)((((ip >> 16) & 0xF) << 12) | fop));
            WriteU16(image, 10, (ushort)dp);
            WriteU16(image, 12, (ushort)(((dp >> 16) & 0xF) << 12));
        }
        else
        {
            WriteU16(image, 6, (ushort)_instructionOffset);
            WriteU16(image, 8, _instructionSelector);
            WriteU16(image, 10, (ushort)_dataOffset);
            WriteU16(image, 12, _dataSelector);
        }
    }

    private void ReadEnvironment(ReadOnlySpan<byte> image, bool realMode, bool operandSize32)
    {
        if (operandSize32)
        {
            SetControlWordRaw(ReadU16(image, 0));
            SetStatusWord(ReadU16(image, 4));
            SetTagWord(ReadU16(image, 8));
            if (realMode)
            {
                uint w16 = ReadU32(image, 16);
                _instructionSelector = 0;
                _instructionOffset = ReadU16(image, 12) | (((w16 >> 12) & 0xFFFF) << 16);
                SetLastOpcode((ushort)w16);
                _dataSelector = 0;
                _dataOffset = ReadU16(image, 20) | (((ReadU32(image, 24) >> 12) & 0xFFFF) << 16);
            }
            else
            {
                _instructionOffset = ReadU32(image, 12);
                _instructionSelector = ReadU16(image, 16);
                SetLastOpcode(ReadU16(image, 18));
                _dataOffset = ReadU32(image, 20);
                _dataSelector = ReadU16(image, 24);
            }
        }
        else
        {
            SetControlWordRaw(ReadU16(image, 0));
            SetStatusWord(ReadU16(image, 2));
            SetTagWord(ReadU16(image, 4));
            if (realMode)
            {
                ushort w8 = ReadU16(image, 8);
                _instructionSelector = 0;
                _instructionOffset = ReadU16(image, 6) | ((uint)(w8 >> 12) << 16);
                SetLastOpcode(w8);
                _dataSelector = 0;
                _dataOffset = ReadU16(image, 10) | ((uint)(ReadU16(image, 12) >> 12) << 16);
            }
            else
            {
                _instructionOffset = ReadU16(image, 6);
                _instructionSelector = ReadU16(image, 8);
                SetLastOpcode(0);     // this layout has no opcode field
                _dataOffset = ReadU16(image, 10);
                _dataSelector = ReadU16(image, 12);
            }
        }
        UpdateErrorSummary();
    }

    private void SetControlWordRaw(ushort value) => _control = (ushort)((value & 0x1F3F) | 0x0040);

    /// <summary>
    /// Writes the x87 part (bytes 0..23 and 32..159) of the 32-bit FXSAVE image (SDM vol.1 10.5.1,
    /// table 10-2): abridged tag (1 = valid) in byte 4, registers in stack order, 16 bytes apart,
    /// reserved bytes zeroed. MXCSR (bytes 24..31) and the XMM registers belong to the caller.
    /// FXSAVE does not check for pending exceptions and leaves the FPU state unchanged.
    /// </summary>
    public void SaveFxsaveImage(Span<byte> image)
    {
        if (image.Length < FxsaveX87Bytes)
        {
            throw new ArgumentException($"FXSAVE image needs at least {FxsaveX87Bytes} bytes", nameof(image));
        }
        WriteU16(image, 0, _control);
        WriteU16(image, 2, StatusWord);
        byte abridged = 0;
        for (int i = 0; i < 8; i++)
        {
            if ((_validMask & (1 << i)) != 0)
            {
                abridged |= (byte)(1 << i);
            }
        }
        image[4] = abridged;
        image[5] = 0;
        WriteU16(image, 6, LastOpcode);
        WriteU32(image, 8, _instructionOffset);
        WriteU16(image, 12, _instructionSelector);
        WriteU16(image, 14, 0);
        WriteU32(image, 16, _dataOffset);
        WriteU16(image, 20, _dataSelector);
        WriteU16(image, 22, 0);
        for (int i = 0; i < 8; i++)
        {
            Span<byte> slot = image.Slice(32 + 16 * i, 16);
            St(i).Write(slot);
            slot[10..].Clear();
        }
    }

    /// <summary>Loads the x87 part of a 32-bit FXRSTOR image; the abridged tag marks registers empty or valid.</summary>
    public void LoadFxsaveImage(ReadOnlySpan<byte> image)
    {
        if (image.Length < FxsaveX87Bytes)
        {
            throw new ArgumentException($"FXRSTOR image needs at least {FxsaveX87Bytes} bytes", nameof(image));
        }
        SetControlWordRaw(ReadU16(image, 0));
        SetStatusWord(ReadU16(image, 2));
        _validMask = image[4];
        SetLastOpcode(ReadU16(image, 6));
        _instructionOffset = ReadU32(image, 8);
        _instructionSelector = ReadU16(image, 12);
        _dataOffset = ReadU32(image, 16);
        _dataSelector = ReadU16(image, 20);
        for (int i = 0; i < 8; i++)
        {
            _registers[Physical(i)] = Float80.Read(image.Slice(32 + 16 * i, 10));
        }
        UpdateErrorSummary();
    }

    private static void WriteU16(Span<byte> image, int offset, ushort value) =>
        BinaryPrimitives.WriteUInt16LittleEndian(image[offset..], value);

    private static void WriteU32(Span<byte> image, int offset, uint value) =>
        BinaryPrimitives.WriteUInt32LittleEndian(image[offset..], value);

    private static ushort ReadU16(ReadOnlySpan<byte> image, int offset) =>
        BinaryPrimitives.ReadUInt16LittleEndian(image[offset..]);

    private static uint ReadU32(ReadOnlySpan<byte> image, int offset) =>
        BinaryPrimitives.ReadUInt32LittleEndian(image[offset..]);
}
