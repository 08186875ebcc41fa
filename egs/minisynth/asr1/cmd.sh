# shellcheck shell=bash
# Job backend of the recipe: every parallel step runs as "${train_cmd} [opts] JOB=1:N log cmd".
#   cmd_backend=local  parallel local processes (utils/run.py), the default
#   cmd_backend=slurm  one sbatch array per step (utils/slurm.py), options via conf/slurm.conf
# Set cmd_backend in the environment or with "./run.sh --cmd_backend slurm".
cmd_backend=${cmd_backend:-local}
case "$cmd_backend" in
    local)
        export train_cmd="utils/run.py"
        export cuda_cmd="utils/run.py"
        export decode_cmd="utils/run.py" ;;
    slurm)
        # Add e.g. "--time 24:00:00" or "--mem 4G" here; see conf/slurm.conf.
        export train_cmd="utils/slurm.py"
        export cuda_cmd="utils/slurm.py"
        export decode_cmd="utils/slurm.py" ;;
    *)
        echo "cmd.sh: unknown cmd_backend '$cmd_backend' (local or slurm)" >&2
        return 1 ;;
esac
