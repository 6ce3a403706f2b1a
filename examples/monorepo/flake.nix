{
  description = "Example monorepo: one reproducible OCI image per service";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.11";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};

      banana = pkgs.buildGoModule {
        pname = "banana";
        version = "0.1.0";
        src = ./services/banana;
        vendorHash = null; # standard library only
        env.CGO_ENABLED = "0";
        ldflags = [ "-s" "-w" ];
      };

      orange = pkgs.runCommand "orange" { } ''
        mkdir -p $out/app
        cp ${./services/orange/server.py} $out/app/server.py
      '';
    in
    {
      packages.${system} = {
        inherit banana orange;

        # Only the service's own files and its closure go in: a change elsewhere in
        # the monorepo does not change these bytes.
        banana-image = pkgs.dockerTools.buildLayeredImage {
          name = "banana";
          tag = "nix";
          contents = [ banana ];
          config = {
            Entrypoint = [ "${banana}/bin/banana" ];
            ExposedPorts."8080/tcp" = { };
            User = "65532:65532";
          };
        };

        orange-image = pkgs.dockerTools.buildLayeredImage {
          name = "orange";
          tag = "nix";
          contents = [ pkgs.python3 orange ];
          config = {
            Entrypoint = [ "${pkgs.python3}/bin/python3" "${orange}/app/server.py" ];
            ExposedPorts."8080/tcp" = { };
            User = "65532:65532";
          };
        };
      };
    };
}
