using System.Buffers.Binary;
using System.Text;
using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace SecureVmm.Policy.Guests;

/// <summary>
/// Builds the project's own guest programs as Multiboot v1 images using the "a.out kludge"
/// (Multiboot specification 0.6.96, section 3.1.1, header flag bit 16): a flat image whose
/// header gives its load and entry addresses, so the same bytes boot on SecureVmm and on
/// <c>qemu-system-i386 -kernel</c>.
/// Memory layout: the header and code are loaded at <see cref="LoadAddress"/>; the data
/// section (strings, GDT, variables) at <see cref="DataAddress"/>; bss (IDT, buffers) follows
/// at <see cref="BssAddress"/> and is zeroed by the loader; the stack grows down from <see cref="StackTop"/>.
/// Code is emitted with Iced's <see cref="Assembler"/>. Because Iced's 32-bit assembler cannot
/// use labels inside memory operands, the program is assembled twice: the first pass fixes every
/// label's address, the second emits the same-sized instructions with those addresses filled in
/// (addresses only ever appear as <c>mov r32, imm32</c> or data, whose size does not depend on
/// the value).
/// </summary>
public sealed class GuestBuilder
{
    public const uint LoadAddress = 0x0010_0000;
    public const uint HeaderSize = 32;
    public const uint MaxCodeSize = 0x1_0000;
    public const uint DataAddress = LoadAddress + MaxCodeSize;
    public const uint MaxDataSize = 0x1_0000;
    /// <summary>Bss starts at a fixed address so that its addresses are the same in both passes.</summary>
    public const uint BssAddress = DataAddress + MaxDataSize;
    public const uint StackTop = 0x0009_F000;
    public const uint MultibootMagic = 0x1BAD_B002;
    /// <summary>Flags: bit 16 (address fields valid).</summary>
    public const uint MultibootFlags = 1u << 16;

    // Selectors of the flat GDT the runtime installs.
    public const ushort CodeSelector = 0x08;
    public const ushort DataSelector = 0x10;

    private readonly List<byte> _data = [];
    private readonly Dictionary<string, uint> _strings = new(StringComparer.Ordinal);
    private uint _bssSize;
    private Dictionary<string, ulong>? _labelAddresses;
    private readonly Dictionary<string, Label> _labels = new(StringComparer.Ordinal);

    private GuestBuilder(Assembler asm) => A = asm;

    /// <summary>The assembler for the current pass.</summary>
    public Assembler A { get; private set; }

    /// <summary>The address of a named label (0 during the first pass).</summary>
    public uint AddressOf(string label) =>
        _labelAddresses is not null && _labelAddresses.TryGetValue(label, out ulong a) ? (uint)a : 0;

    /// <summary>A named label, created once per pass; its address is known in the second pass.</summary>
    public Label Named(string name)
    {
        if (!_labels.TryGetValue(name, out Label label))
        {
            label = A.CreateLabel(name);
            _labels[name] = label;
        }
        return label;
    }

    /// <summary>Places a named label at the current position.</summary>
    public void Mark(string name)
    {
        Label label = Named(name);
        A.Label(ref label);
        _labels[name] = label; // Label is a struct: keep the copy that knows its instruction
    }

    /// <summary>Adds bytes to the data section and returns their guest address.</summary>
    public uint Data(ReadOnlySpan<byte> bytes, int align = 4)
    {
        while (_data.Count % align != 0)
        {
            _data.Add(0);
        }
        uint address = DataAddress + (uint)_data.Count;
        foreach (byte b in bytes)
        {
            _data.Add(b);
        }
        return address;
    }

    /// <summary>A zero-terminated ASCII string in the data section (deduplicated).</summary>
    public uint String(string text)
    {
        if (!_strings.TryGetValue(text, out uint address))
        {
            byte[] bytes = Encoding.ASCII.GetBytes(text + "\0");
            address = Data(bytes, 1);
            _strings[text] = address;
        }
        return address;
    }

    /// <summary>Reserves zeroed space in the bss section; returns its address.</summary>
    public uint Bss(uint size, uint align = 16)
    {
        uint offset = AlignUp(_bssSize, align);
        _bssSize = offset + size;
        return BssAddress + offset;
    }

    private static uint AlignUp(uint v, uint a) => (v + a - 1) / a * a;

    /// <summary>
    /// Assembles <paramref name="program"/> (which starts executing at its first instruction,
    /// right after the Multiboot header) into a bootable image.
    /// </summary>
    public static GuestImage Build(string name, Action<GuestBuilder> program)
    {
        // Pass 1: fix label addresses and section sizes.
        var first = new GuestBuilder(new Assembler(32));
        program(first);
        var firstResult = first.Assemble();
        // Pass 2: same code, real addresses.
        var second = new GuestBuilder(new Assembler(32)) { _labelAddresses = firstResult.Labels };
        program(second);
        var result = second.Assemble();
        if (result.Code.Length != firstResult.Code.Length || second._data.Count != first._data.Count)
        {
            throw new InvalidOperationException($"guest '{name}': code size changed between passes");
        }
        if (second._data.Count > MaxDataSize)
        {
            throw new InvalidOperationException($"guest '{name}': data section larger than {MaxDataSize} bytes");
        }
        return second.Link(name, result.Code);
    }

    private (byte[] Code, Dictionary<string, ulong> Labels) Assemble()
    {
        var stream = new MemoryStream();
        var result = A.Assemble(new StreamCodeWriter(stream), LoadAddress + HeaderSize, BlockEncoderOptions.ReturnNewInstructionOffsets);
        var labels = new Dictionary<string, ulong>(StringComparer.Ordinal);
        foreach (var (labelName, label) in _labels)
        {
            labels[labelName] = result.GetLabelRIP(label);
        }
        byte[] code = stream.ToArray();
        if (code.Length > MaxCodeSize - HeaderSize)
        {
            throw new InvalidOperationException($"guest code of {code.Length} bytes exceeds {MaxCodeSize - HeaderSize}");
        }
        return (code, labels);
    }

    private GuestImage Link(string name, byte[] code)
    {
        uint loadEnd = DataAddress + (uint)_data.Count;
        uint bssEnd = BssAddress + AlignUp(_bssSize, 16);
        byte[] image = new byte[loadEnd - LoadAddress];
        Span<byte> header = image.AsSpan(0, (int)HeaderSize);
        BinaryPrimitives.WriteUInt32LittleEndian(header[0..], MultibootMagic);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], MultibootFlags);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], unchecked(0u - MultibootMagic - MultibootFlags));
        BinaryPrimitives.WriteUInt32LittleEndian(header[12..], LoadAddress);      // header_addr
        BinaryPrimitives.WriteUInt32LittleEndian(header[16..], LoadAddress);      // load_addr
        BinaryPrimitives.WriteUInt32LittleEndian(header[20..], loadEnd);          // load_end_addr
        BinaryPrimitives.WriteUInt32LittleEndian(header[24..], bssEnd);           // bss_end_addr
        BinaryPrimitives.WriteUInt32LittleEndian(header[28..], LoadAddress + HeaderSize); // entry_addr
        code.CopyTo(image.AsSpan((int)HeaderSize));
        _data.ToArray().CopyTo(image.AsSpan((int)(DataAddress - LoadAddress)));
        return new GuestImage(name, image, LoadAddress, LoadAddress + HeaderSize, bssEnd);
    }

    /// <summary>Calls a named subroutine.</summary>
    public void Call(string label) => A.call(Named(label));

    /// <summary>Jumps to a named label.</summary>
    public void Jmp(string label) => A.jmp(Named(label));

    /// <summary>Loads a label's address into a register (mov r32, imm32: size fixed in both passes).</summary>
    public void LoadAddress32(AssemblerRegister32 reg, string label) => A.mov(reg, AddressOf(label));
}

/// <summary>A built guest: the Multiboot image bytes and where they load.</summary>
public sealed record GuestImage(string Name, byte[] Bytes, uint LoadAddress, uint Entry, uint BssEnd);
