using Xunit;
using FsCheck;
using FsCheck.Fluent;
using Iced.Intel;
using SecureVmm.Tcb.Cpu.X87;

namespace SecureVmm.Tests.X87;

/// <summary>
/// Hostile guests: arbitrary x87 instruction streams over arbitrary memory contents must never
/// throw, and FPU state must stay well formed (waiting instructions honour pending exceptions).
/// </summary>
public class RobustnessTests
{
    private static readonly Gen<byte[]> Programs =
        from length in Gen.Choose(1, 64)
        from ops in Gen.ArrayOf(Gen.Choose(0, 255), length * 2)
        select ops.Select((b, i) => i % 2 == 0 ? (byte)(0xD8 + (b & 7)) : (byte)b).ToArray();

    private static readonly Gen<byte[]> MemoryContents =
        Gen.OneOf(
            Gen.ArrayOf(Gen.Choose(0, 255), 128).Select(a => a.Select(b => (byte)b).ToArray()),
            Gen.Elements<byte>(0x00, 0xFF, 0x7F, 0x80).Select(b => Enumerable.Repeat(b, 128).ToArray()));

    [Fact]
    public void RandomInstructionStreamsNeverThrow()
    {
        var gen = from program in Programs
                  from memory in MemoryContents
                  from control in Gen.Choose(0, 0xFFFF)
                  from realMode in Gen.Elements(false, true)
                  from size32 in Gen.Elements(false, true)
                  from bitness in Gen.Elements(16, 32)
                  select (program, memory, control, realMode, size32, bitness);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(3000 * ArithmeticPropertyTests.SoakFactor), Prop.ForAll(Arb.From(gen), t =>
        {
            var h = new X87Harness();
            h.Context.RealMode = t.realMode;
            h.Context.OperandSize32 = t.size32;
            t.memory.CopyTo(h.Memory.Bytes, 0);
            BitConverter.TryWriteBytes(h.Memory.Bytes.AsSpan(120), (ushort)t.control);
            var decoder = Iced.Intel.Decoder.Create(t.bitness, new ByteArrayCodeReader(t.program));
            while (decoder.IP < (ulong)t.program.Length)
            {
                decoder.Decode(out Instruction insn);
                if (insn.Code == Code.INVALID || !X87Unit.Implements(insn.Mnemonic))
                {
                    continue;
                }
                bool pendingBefore = h.Unit.HasPendingUnmaskedException;
                X87Outcome outcome = h.Unit.Execute(insn, h.Memory, ref h.Context);
                if (outcome == X87Outcome.FloatingPointError)
                {
                    if (!pendingBefore)
                    {
                        return false;
                    }
                    h.Run(a => a.fnclex());
                }
                if (outcome == X87Outcome.MemoryFault || h.Unit.Top is < 0 or > 7)
                {
                    return false;
                }
                // ES/B agree with "a flag is set whose mask is clear".
                ushort sw = h.Unit.StatusWord, cw = h.Unit.ControlWord;
                bool es = (sw & X87Status.ErrorSummary) != 0;
                if (es != ((sw & ~cw & X87Status.ExceptionFlags) != 0) || es != ((sw & X87Status.Busy) != 0))
                {
                    return false;
                }
            }
            return true;
        }));
    }

    [Fact]
    public void EnvironmentAndSaveImagesRoundTripForArbitraryStates()
    {
        var gen = from bytes in Gen.ArrayOf(Gen.Choose(0, 255), 108)
                  from realMode in Gen.Elements(false, true)
                  from size32 in Gen.Elements(false, true)
                  select (bytes: bytes.Select(b => (byte)b).ToArray(), realMode, size32);
        Check.One(Config.QuickThrowOnFailure.WithMaxTest(1000 * ArithmeticPropertyTests.SoakFactor), Prop.ForAll(Arb.From(gen), t =>
        {
            // Load an arbitrary image, save it, load the saved image, save again: the two saves agree.
            var h = new X87Harness();
            h.Context.RealMode = t.realMode;
            h.Context.OperandSize32 = t.size32;
            t.bytes.CopyTo(h.Memory.Bytes, 0);
            h.RunBytes(t.size32 ? "DD20" : "66DD20");       // frstor [eax]
            int size = X87Unit.SaveSize(t.size32);
            byte[] image = new byte[512];
            h.Unit.SaveFxsaveImage(image);
            h.Unit.Reset();
            h.Unit.LoadFxsaveImage(image);                  // FXSAVE/FXRSTOR keeps everything FNSAVE shows
            h.RunBytes(t.size32 ? "DD30" : "66DD30");       // fnsave [eax]
            byte[] first = h.Memory.Bytes.AsSpan(0, size).ToArray();
            h.RunBytes(t.size32 ? "DD20" : "66DD20");
            h.RunBytes(t.size32 ? "DD30" : "66DD30");
            return first.AsSpan().SequenceEqual(h.Memory.Bytes.AsSpan(0, size));
        }));
    }
}
