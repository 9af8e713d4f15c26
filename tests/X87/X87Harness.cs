using Xunit;
using System.Buffers.Binary;
using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Tests.X87;

/// <summary>Guest memory for the unit under test: the memory operand's effective address is offset 0 of <see cref="Bytes"/>.</summary>
internal sealed class ArrayMemory : IX87Memory
{
    public readonly byte[] Bytes = new byte[128];
    public bool FailReads;
    public bool FailWrites;
    public int Reads;
    public int Writes;

    public bool Read(int offset, Span<byte> dest)
    {
        Reads++;
        if (FailReads)
        {
            return false;
        }
        Bytes.AsSpan(offset, dest.Length).CopyTo(dest);
        return true;
    }

    public bool Write(int offset, ReadOnlySpan<byte> src)
    {
        Writes++;
        if (FailWrites)
        {
            return false;
        }
        src.CopyTo(Bytes.AsSpan(offset));
        return true;
    }
}

/// <summary>An x87 unit, a memory and a CPU context, driven by instructions built with Iced's assembler.</summary>
internal sealed class X87Harness
{
    public readonly X87Unit Unit = new();
    public readonly ArrayMemory Memory = new();
    public X87CpuContext Context = new() { OperandSize32 = true, Cs = 0x08, Eip = 0x1000, DataSelector = 0x10, DataOffset = 0x2000 };

    /// <summary>Builds instructions (memory operands use [eax]) and executes them; returns the last outcome.</summary>
    public X87Outcome Run(Action<Assembler> build, int bitness = 32)
    {
        var asm = new Assembler(bitness);
        build(asm);
        X87Outcome outcome = X87Outcome.Done;
        foreach (Instruction insn in asm.Instructions)
        {
            outcome = Unit.Execute(insn, Memory, ref Context);
            if (outcome != X87Outcome.Done)
            {
                return outcome;
            }
        }
        return outcome;
    }

    /// <summary>Executes raw instruction bytes decoded in 32-bit mode (for encodings the assembler does not choose).</summary>
    public X87Outcome RunBytes(string hex, int bitness = 32)
    {
        var decoder = Iced.Intel.Decoder.Create(bitness, new ByteArrayCodeReader(Convert.FromHexString(hex)));
        decoder.Decode(out Instruction insn);
        Assert.NotEqual(Code.INVALID, insn.Code);
        return Unit.Execute(insn, Memory, ref Context);
    }

    public void Ok(Action<Assembler> build) => Assert.Equal(X87Outcome.Done, Run(build));

    public void SetControl(ushort cw)
    {
        BinaryPrimitives.WriteUInt16LittleEndian(Memory.Bytes, cw);
        Ok(a => a.fldcw(__word_ptr[eax]));
    }

    public void PushDouble(double value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(Memory.Bytes, BitConverter.DoubleToUInt64Bits(value));
        Ok(a => a.fld(__qword_ptr[eax]));
    }

    public void PushSingle(float value)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(Memory.Bytes, BitConverter.SingleToUInt32Bits(value));
        Ok(a => a.fld(__dword_ptr[eax]));
    }

    public void Push(Float80 value)
    {
        value.Write(Memory.Bytes);
        Ok(a => a.fld(__tword_ptr[eax]));
    }

    public double PopDouble()
    {
        Ok(a => a.fstp(__qword_ptr[eax]));
        return BitConverter.UInt64BitsToDouble(BinaryPrimitives.ReadUInt64LittleEndian(Memory.Bytes));
    }

    public ulong PopDoubleBits()
    {
        Ok(a => a.fstp(__qword_ptr[eax]));
        return BinaryPrimitives.ReadUInt64LittleEndian(Memory.Bytes);
    }

    public float PopSingle()
    {
        Ok(a => a.fstp(__dword_ptr[eax]));
        return BitConverter.UInt32BitsToSingle(BinaryPrimitives.ReadUInt32LittleEndian(Memory.Bytes));
    }

    public Float80 St(int i) => Unit.ReadStack(i);

    public ushort Status => Unit.StatusWord;

    public bool Flag(ushort bit) => (Unit.StatusWord & bit) != 0;

    /// <summary>C3, C2, C0 as a three-character string, e.g. "100" for equal.</summary>
    public string Codes => $"{(Flag(X87Status.C3) ? 1 : 0)}{(Flag(X87Status.C2) ? 1 : 0)}{(Flag(X87Status.C0) ? 1 : 0)}";

    /// <summary>Control word with the given precision (24/53/64) and rounding control, all exceptions masked.</summary>
    public static ushort ControlWord(int precision, X87Rounding rounding, ushort unmask = 0)
    {
        int pc = precision switch { 24 => 0, 53 => 2, _ => 3 };
        return (ushort)((0x7F & ~unmask) | (pc << 8) | ((int)rounding << 10) | 0x40);
    }
}
