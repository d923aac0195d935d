namespace BitDeltaNative.Kernels;

/// <summary>
/// Up to eight values passed by value to a kernel: ILGPU 1.5.3 takes no array of views as a parameter, but a struct of
/// views it does, so a launch over several tenants' buffers (LowRankLinear's and SparseLinear's many-tenant forms, as
/// Punica's SGMV runs many LoRA adapters in one launch, arXiv 2310.18547) gets them as the eight fields of this struct.
/// A block picks its one by index, the same for all its threads.
/// </summary>
public struct Eight<T> where T : struct
{
    public T A0, A1, A2, A3, A4, A5, A6, A7;

    public const int Count = 8;

    public T this[int i]
    {
        readonly get => i switch { 0 => A0, 1 => A1, 2 => A2, 3 => A3, 4 => A4, 5 => A5, 6 => A6, _ => A7 };
        set
        {
            switch (i)
            {
                case 0: A0 = value; break;
                case 1: A1 = value; break;
                case 2: A2 = value; break;
                case 3: A3 = value; break;
                case 4: A4 = value; break;
                case 5: A5 = value; break;
                case 6: A6 = value; break;
                case 7: A7 = value; break;
                default: throw new ArgumentOutOfRangeException(nameof(i), i, "Eight holds indices 0 to 7");
            }
        }
    }
}
